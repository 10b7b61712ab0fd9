"""Intake: what reaches the judge. Folders opened by descriptor without following links
(`safefs`), the inbox's rules of which files are candidates (`inbox`), and the watchdog
observer that turns arrivals into offers (`observer`)."""
