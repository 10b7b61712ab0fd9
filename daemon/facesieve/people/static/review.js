
(function () {
  'use strict';
  var STORED = 'facesieve-review-token';
  var token = takeToken();
  var body = document.body;
  var queue = [];        // items waiting, the shown one first
  var undoable = [];     // {item, verdict_id} of this page's decisions, latest last
  var pictures = {};     // id -> Promise of {url, width, height}
  var busy = false;
  var decided = 0;
  var $ = function (id) { return document.getElementById(id); };

  // The token comes in the URL's fragment (never sent to a server) and leaves only in
  // the X-Facesieve-Token header of this origin's requests. It is kept in this
  // origin's localStorage (scheme, host and port: no other port reads it) so that the
  // report's links (#id=N) reach the page in a browser that opened the printed URL;
  // the fragment is then taken out of the address bar and the history.
  function takeToken() {
    var fragment = new URLSearchParams(location.hash.slice(1));
    var given = fragment.get('token');
    if (!given) {
      try { return localStorage.getItem(STORED) || ''; } catch (e) { return ''; }
    }
    try { localStorage.setItem(STORED, given); } catch (e) { /* memory only */ }
    fragment.delete('token');
    var rest = fragment.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    return given;
  }

  function refused() {
    try { localStorage.removeItem(STORED); } catch (e) { /* nothing kept */ }
    body.setAttribute('data-state', 'refused');
  }

  // No cookie is sent or needed: the header is the only credential.
  function authorised(options) {
    options.headers = {'X-Facesieve-Token': token};
    options.credentials = 'omit';
    return options;
  }

  function api(method, path, data) {
    var options = authorised({method: method});
    if (data !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(data);
    }
    return fetch(path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        return {status: response.status, ok: response.ok, json: json};
      });
    });
  }

  function picture(item) {
    if (!pictures[item.id]) {
      pictures[item.id] = fetch('image/' + item.id, authorised({}))
        .then(function (response) {
          if (!response.ok) { throw new Error('image ' + response.status); }
          var width = Number(response.headers.get('X-Image-Width'));
          var height = Number(response.headers.get('X-Image-Height'));
          return response.blob().then(function (blob) {
            var url = URL.createObjectURL(blob);
            var img = new Image();
            img.src = url;
            return img.decode().then(function () {
              return {url: url, width: width, height: height};
            });
          });
        });
      pictures[item.id].catch(function () { delete pictures[item.id]; });
    }
    return pictures[item.id];
  }

  function forget(item) {
    var pending = pictures[item.id];
    delete pictures[item.id];
    if (pending) { pending.then(function (p) { URL.revokeObjectURL(p.url); }, function () {}); }
  }

  function say(text, error) {
    $('message').textContent = text;
    $('message').className = error ? 'error' : '';
  }

  function faceText(face) {
    var gender = face.gender ? face.gender + ' ' + Math.round(100 * face.gender_confidence) + '%'
      : 'gender unknown';
    return gender + ' · face ' + face.confidence.toFixed(2) + ' · ' + face.box[2] + 'x' +
      face.box[3] + ' px';
  }

  function render(item, pic) {
    var frame = $('frame');
    Array.prototype.slice.call(frame.querySelectorAll('.box')).forEach(function (b) {
      b.remove();
    });
    $('photo').src = pic.url;
    fit(pic);
    item.faces.forEach(function (face, i) {
      var box = document.createElement('div');
      box.className = 'box ' + (face.gender || 'unknown');
      box.style.left = (100 * face.box[0] / pic.width) + '%';
      box.style.top = (100 * face.box[1] / pic.height) + '%';
      box.style.width = (100 * face.box[2] / pic.width) + '%';
      box.style.height = (100 * face.box[3] / pic.height) + '%';
      var label = document.createElement('span');
      label.textContent = (i + 1) + (face.gender ? ': ' + face.gender + ' ' +
        Math.round(100 * face.gender_confidence) + '%' : ': ?');
      box.appendChild(label);
      frame.appendChild(box);
    });
    $('name').textContent = item.name + '  (ledger #' + item.id + ')';
    $('reason').textContent = item.reason;
    var list = $('faces');
    list.textContent = '';
    item.faces.forEach(function (face) {
      var li = document.createElement('li');
      li.textContent = faceText(face);
      list.appendChild(li);
    });
    $('path').textContent = item.path;
    frame.hidden = false;
    $('empty').hidden = true;
  }

  // As large as the stage allows, small photos scaled up: the boxes scale with it.
  function fit(pic) {
    var stage = $('stage');
    var scale = Math.min((stage.clientWidth - 24) / pic.width,
      (stage.clientHeight - 24) / pic.height);
    $('photo').style.width = Math.floor(pic.width * scale) + 'px';
    $('photo').style.height = Math.floor(pic.height * scale) + 'px';
  }
  window.addEventListener('resize', function () {
    if (queue.length && pictures[queue[0].id]) { pictures[queue[0].id].then(fit); }
  });

  function counts() {
    $('left').textContent = String(queue.length);
    $('done').textContent = String(decided);
  }

  function show() {
    counts();
    if (!queue.length) {
      $('frame').hidden = true;
      $('empty').hidden = false;
      ['name', 'reason', 'faces', 'path'].forEach(function (id) { $(id).textContent = ''; });
      body.setAttribute('data-current', '');
      body.setAttribute('data-state', 'empty');
      return Promise.resolve();
    }
    var item = queue[0];
    body.setAttribute('data-state', 'loading');
    return picture(item).then(function (pic) {
      if (queue[0] !== item) { return; }
      render(item, pic);
      body.setAttribute('data-current', String(item.id));
      body.setAttribute('data-state', 'ready');
      // The next ones are fetched and decoded while this one is looked at.
      queue.slice(1, 3).forEach(function (next) { picture(next).catch(function () {}); });
    }, function (error) {
      say('cannot show ' + item.name + ': ' + error.message + '; skipped', true);
      queue.shift();
      return show();
    });
  }

  function decide(label) {
    if (busy || !queue.length || body.getAttribute('data-state') !== 'ready') { return; }
    busy = true;
    var item = queue[0];
    body.setAttribute('data-state', 'deciding');
    api('POST', 'api/decide', {id: item.id, label: label}).then(function (result) {
      if (result.ok) {
        undoable.push({item: item, verdict_id: result.json.verdict_id});
        decided += 1;
        queue.shift();
        forget(item);
        var where = result.json.to === null ? 'deleted' : result.json.to;
        say(label.replace('_', ' ') + ': ' + item.name + ' → ' + where, false);
      } else if (result.status === 409) {
        queue.shift();
        forget(item);
        say('not applied: ' + result.json.error, true);
      } else {
        say('not applied: ' + (result.json.error || result.status), true);
      }
    }, function (error) {
      say('not applied: ' + error.message, true);
    }).then(function () {
      busy = false;
      // The last one decided: files that reached review meanwhile come next.
      return queue.length ? show() : load();
    });
  }

  function undo() {
    if (busy) { return; }
    var last = undoable.pop();
    if (!last) { say('nothing to undo', true); return; }
    busy = true;
    body.setAttribute('data-state', 'deciding');
    api('POST', 'api/undo', {verdict_id: last.verdict_id}).then(function (result) {
      if (result.ok) {
        decided -= 1;
        queue.unshift(last.item);
        say('undone: ' + last.item.name + ' is back in review', false);
      } else {
        say('cannot undo: ' + (result.json.error || result.status), true);
      }
    }, function (error) {
      undoable.push(last);
      say('cannot undo: ' + error.message, true);
    }).then(function () {
      busy = false;
      return show();
    });
  }

  document.addEventListener('keydown', function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    var labels = {k: 'keep', r: 'reject', n: 'no_face'};
    var key = event.key.toLowerCase();
    if (labels[key]) { event.preventDefault(); decide(labels[key]); }
    else if (key === 'u') { event.preventDefault(); undo(); }
  });
  Array.prototype.slice.call(document.querySelectorAll('button[data-label]')).forEach(
    function (button) {
      button.addEventListener('click', function () { decide(button.dataset.label); });
    });
  $('undo').addEventListener('click', undo);

  function load() {
    return api('GET', 'api/queue').then(function (result) {
      if (result.status === 403) {
        refused();
        say('this page needs the URL facesieve review printed, with its #token=', true);
        return;
      }
      if (!result.ok) { say(result.json.error || 'cannot load the queue', true); return; }
      $('who').textContent = result.json.who;
      queue = result.json.items;
      // #id=N (the report's links) shows that file first.
      var wanted = /(?:^#|&)id=(\d+)/.exec(location.hash);
      var at = wanted ? queue.findIndex(function (i) { return i.id === Number(wanted[1]); }) : -1;
      if (at > 0) { queue.unshift(queue.splice(at, 1)[0]); }
      return show();
    });
  }
  load();
})();
