/* pxeprov's status page: reads api/v1/status.json (beside the page) every second and shows it.
 *
 * Every value in the data is text from the network, the logs and the machines: it may hold
 * markup. The page is built with createElement and textContent only; no value ever becomes
 * markup, a tag or attribute name, a URL or an event handler. Class names come from fixed
 * tables, never from the data.
 */
(function () {
  'use strict';

  var DATA_URL = 'api/v1/status.json';
  var POLL_MS = 1000; // between the end of one request and the start of the next
  var TIMEOUT_MS = 8000; // a request that takes longer counts as "the server does not answer"
  var API = 1;
  var STAGES = ['offer', 'loader', 'menu', 'kernel', 'initrd', 'rootfs'];
  var STAGE_WORDS = {
    offer: 'proxy offer',
    loader: 'boot loader',
    menu: 'menu',
    kernel: 'kernel',
    initrd: 'initrd',
    rootfs: 'root filesystem'
  };
  // the statuses the page knows, each with its class; anything else is "other"
  var LEVELS = { pass: 'pass', info: 'info', warn: 'warn', fail: 'fail' };
  var PLAN_STATUSES = {
    armed: 'wait', waiting: 'wait', started: 'busy', fired: 'busy',
    done: 'pass', failed: 'fail', standing: 'info'
  };
  var PHASES = {
    waiting: 'wait', sending: 'busy', between: 'busy', sent: 'pass',
    failed: 'fail', stopped: 'other'
  };

  var MESSAGES = {
    nodata: "No data yet: pxeprov-watch has not written the page's data " +
      '(is it running? `pxeprov init` starts it)',
    token: "The page's token is wrong or was rotated: ask for the new address " +
      '(`pxeprov web url`)',
    network: 'The server does not answer'
  };

  // ------------------------------------------------------------------ state

  var lastGenerated = null; // the data's `generated` last shown
  var changedAt = 0; // the browser's clock (ms, monotonic) when `generated` last changed
  var heartbeat = 10; // seconds, from the data
  var fetchProblem = null; // {kind, text} of the last request, null when it went well
  var healthTime = 0; // the health checks' time, the server's clock
  var healthAgo = null; // the element saying "n min ago"
  var healthOpen = false; // the passed checks were unfolded

  // ------------------------------------------------------------------ helpers

  function now() {
    return (window.performance && performance.now) ? performance.now() : Date.now();
  }

  function str(v) {
    if (v === null || v === undefined) return '';
    return typeof v === 'object' ? '' : String(v);
  }

  function num(v) {
    return typeof v === 'number' && isFinite(v) ? v : 0;
  }

  function arr(v) {
    return Array.isArray(v) ? v : [];
  }

  function obj(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? v : null;
  }

  function own(table, key) {
    return typeof key === 'string' && Object.prototype.hasOwnProperty.call(table, key);
  }

  function pick(table, key, fallback) {
    return own(table, key) ? table[key] : fallback;
  }

  // an element of a fixed tag and fixed classes, with text (never markup)
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null && text !== '') e.textContent = String(text);
    return e;
  }

  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      parent.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return parent;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function pad(n) {
    return n < 10 ? '0' + n : String(n);
  }

  // HH:MM:SS, the browser's local time, of epoch seconds ('' for none)
  function hms(epoch) {
    if (!(typeof epoch === 'number' && isFinite(epoch) && epoch > 0)) return '';
    var d = new Date(epoch * 1000);
    if (!isFinite(d.getTime())) return '';
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  // HH:MM:SS today, else YYYY-MM-DD HH:MM:SS
  function when(epoch) {
    var t = hms(epoch);
    if (!t) return '';
    var d = new Date(epoch * 1000);
    var today = new Date();
    if (d.toDateString() === today.toDateString()) return t;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + t;
  }

  // an ISO time ("2026-12-06T04:10:00Z") as local HH:MM:SS, or the text as it is
  function isoTime(text) {
    var s = str(text);
    var ms = Date.parse(s);
    return s && isFinite(ms) ? when(ms / 1000) : s;
  }

  function size(bytes) {
    var n = num(bytes);
    if (n <= 0) return '';
    var units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    var i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i++;
    }
    var digits = i === 0 || n >= 100 ? 0 : 1;
    return n.toFixed(digits) + ' ' + units[i];
  }

  function ago(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return 'just now';
    var m = Math.floor(s / 60);
    if (m < 60) return m + ' min ago';
    var h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min ago';
    return Math.floor(h / 24) + ' days ago';
  }

  function plural(n, one, many) {
    return n + ' ' + (n === 1 ? one : many);
  }

  function section(id) {
    var s = document.getElementById(id);
    return {
      root: s,
      count: s.querySelector('.count'),
      content: s.querySelector('.content')
    };
  }

  function setCount(sec, text) {
    sec.count.textContent = text === '' ? '' : String(text);
  }

  function badge(text, level) {
    return el('span', 'badge ' + level, text);
  }

  function empty(text) {
    return el('p', 'empty', text);
  }

  // a "key value" pair in a line of facts
  function fact(key, value, cls) {
    var v = str(value);
    if (!v) return null;
    var f = el('span', 'fact' + (cls ? ' ' + cls : ''));
    add(f, el('span', 'fact-key', key), el('span', 'fact-value', v));
    return f;
  }

  // ------------------------------------------------------------------ header

  function renderHeader(data) {
    var server = obj(data.server) || {};
    var host = str(server.hostname);
    document.getElementById('hostname').textContent = host;
    document.title = host ? 'pxeprov \u00b7 ' + host : 'pxeprov status';

    var box = document.getElementById('server');
    clear(box);
    var layout = str(server.layout);
    var chain = str(server.uefi_chain);
    var address = str(server.address);
    var port = num(server.http_port);
    add(box,
      fact('interface', server.interface, 'mono'),
      fact('address', address && port && port !== 80 ? address + ':' + port : address, 'mono'),
      fact('subnet', server.subnet, 'mono'),
      fact('layout', layout === 'http' ? 'HTTP' : layout === 'tftp' ? 'TFTP only' : layout),
      fact('UEFI via', chain === 'ipxe' ? 'iPXE' : chain === 'grub' ? 'GRUB' : chain),
      fact('watcher since', when(num(server.watcher_since))));

    document.getElementById('updated').textContent = 'updated ' + hms(num(data.generated));
  }

  // ------------------------------------------------------------------ machines

  function renderPlan(plan) {
    var box = el('div', 'plan');
    var status = str(plan.status);
    var head = el('div', 'plan-head');
    add(head, el('span', 'plan-label', 'plan'), el('span', 'plan-what', str(plan.what)));
    if (status) head.appendChild(badge(status, 'plan-status ' + pick(PLAN_STATUSES, status, 'other')));
    if (plan.one_shot === true && status !== 'standing') head.appendChild(el('span', 'tag', 'one boot'));
    box.appendChild(head);

    var lines = el('div', 'plan-lines');
    if (str(plan.now)) {
      add(lines, el('div', 'plan-now', 'boots next: ' + str(plan.now)));
    }
    var bits = [];
    if (str(plan.fired)) bits.push('fired ' + isoTime(plan.fired));
    if (str(plan.result) && str(plan.result) !== status) bits.push('result: ' + str(plan.result));
    if (str(plan.group)) bits.push('group ' + str(plan.group));
    if (str(plan.session)) bits.push('session ' + str(plan.session));
    if (bits.length) lines.appendChild(el('div', 'plan-meta', bits.join(' \u00b7 ')));
    if (str(plan.reason)) {
      var reason = el('div', 'plan-reason ' + (str(plan.result) === 'failed' ? 'fail' : 'plain'));
      reason.textContent = str(plan.reason);
      lines.appendChild(reason);
    }
    // its progress in words, unless it only says again what is shown above (its times and its
    // job's report are there already)
    var progress = str(plan.progress);
    if (progress && !str(plan.reason) && progress !== 'one boot') {
      lines.appendChild(el('div', 'plan-progress', progress));
    }
    box.appendChild(lines);
    return box;
  }

  function renderTimeline(m) {
    var reached = {};
    arr(m.timeline).forEach(function (step) {
      var s = obj(step);
      if (s && own(STAGE_WORDS, s.stage) && !reached[s.stage]) reached[s.stage] = s;
    });
    var last = -1;
    STAGES.forEach(function (stage, i) {
      if (reached[stage]) last = i;
    });
    var stalled = str(m.stalled) !== '';
    var list = el('ol', 'timeline');
    STAGES.forEach(function (stage, i) {
      var step = reached[stage];
      var chip = el('li', 'stage' + (step ? ' reached' : '') +
        (step && i === last ? ' current' : '') +
        (!step && stalled && i === last + 1 ? ' missing' : ''));
      chip.setAttribute('data-stage', stage);
      var words = step && str(step.words) ? str(step.words) : STAGE_WORDS[stage];
      chip.appendChild(el('span', 'stage-words', words));
      if (step) {
        chip.appendChild(el('span', 'stage-time', hms(num(step.time))));
        var detail = str(step.detail);
        if (detail) {
          chip.setAttribute('title', detail);
          chip.appendChild(el('span', 'stage-detail', detail));
        }
      } else {
        chip.appendChild(el('span', 'stage-time', '\u2014'));
      }
      list.appendChild(chip);
    });
    return list;
  }

  function renderMachine(m) {
    var earlier = m.earlier === true;
    var stalled = str(m.stalled);
    var done = m.done === true;
    var cls = 'machine card';
    if (earlier) cls += ' earlier';
    if (stalled) cls += ' machine-stalled';
    else if (done) cls += ' machine-done';
    var card = el('article', cls);
    card.setAttribute('data-mac', str(m.mac));

    var head = el('div', 'machine-head');
    var title = el('div', 'machine-title');
    add(title, el('span', 'mac', str(m.mac)));
    if (str(m.firmware)) title.appendChild(el('span', 'tag firmware', str(m.firmware)));
    if (done && !stalled) title.appendChild(el('span', 'done', '\u2713 done'));
    head.appendChild(title);

    var facts = el('div', 'machine-facts');
    add(facts,
      fact('address', m.address, 'mono address'),
      fact('image', m.image, 'image'));
    var lastSeen = when(num(m.last));
    if (lastSeen) add(facts, fact('last seen', lastSeen, 'seen'));
    else if (!arr(m.timeline).length) add(facts, el('span', 'unseen', 'not seen since the watcher started'));
    if (earlier) facts.appendChild(el('span', 'earlier-note', '(before the watcher restarted)'));
    head.appendChild(facts);
    card.appendChild(head);

    if (stalled) {
      var words = str(m.stage_words) || pick(STAGE_WORDS, str(m.stage), str(m.stage));
      var box = el('div', 'stalled');
      add(box, el('strong', 'stalled-title', words ? 'stalled after ' + words + ':' : 'stalled:'),
        ' ', el('span', 'stalled-cause', stalled));
      card.appendChild(box);
    }

    var plan = obj(m.plan);
    if (plan) card.appendChild(renderPlan(plan));

    card.appendChild(renderTimeline(m));
    return card;
  }

  function renderMachines(data) {
    var sec = section('machines');
    var machines = arr(data.machines).map(obj).filter(Boolean);
    setCount(sec, machines.length);
    clear(sec.content);
    if (!machines.length) {
      sec.content.appendChild(empty('No machine has asked yet.'));
      return;
    }
    var list = el('div', 'machines');
    machines.forEach(function (m) {
      list.appendChild(renderMachine(m));
    });
    sec.content.appendChild(list);
  }

  // ------------------------------------------------------------------ sessions

  function renderSession(s) {
    var card = el('article', 'session card');
    card.setAttribute('data-session', str(s.name));
    var phase = str(s.phase);
    var head = el('div', 'session-head');
    add(head, el('span', 'session-name', str(s.name)));
    if (str(s.image)) head.appendChild(el('span', 'session-image', str(s.image)));
    if (phase) head.appendChild(badge(phase, 'phase ' + pick(PHASES, phase, 'other')));
    card.appendChild(head);
    if (str(s.summary)) card.appendChild(el('div', 'summary', str(s.summary)));

    var part = num(s.partition);
    var parts = num(s.partitions);
    var sent = num(s.bytes_sent);
    var bar = el('div', 'bar');
    var fill = el('div', 'bar-fill');
    bar.appendChild(fill);
    bar.setAttribute('role', 'progressbar');
    var label;
    if (parts > 0) {
      var fraction = phase === 'sent' ? 1 : Math.min(1, Math.max(0, part / parts));
      var percent = Math.round(fraction * 100);
      fill.style.width = percent + '%'; // CSSOM: allowed by the page's policy
      bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', '100');
      bar.setAttribute('aria-valuenow', String(percent));
      label = (part > 0 ? 'partition ' + Math.min(part, parts) + ' of ' + parts : plural(parts, 'partition', 'partitions'));
    } else {
      bar.className = 'bar indeterminate';
      label = 'partitions not known yet';
    }
    if (sent > 0) label += ' \u00b7 ' + size(sent) + ' sent';
    bar.setAttribute('aria-label', label);
    card.appendChild(bar);
    card.appendChild(el('div', 'bar-label', label));

    var receivers = arr(s.receivers).map(obj).filter(Boolean);
    var dropped = receivers.filter(function (r) { return num(r.dropped) > 0; }).length;
    var title = el('div', 'receivers-title',
      plural(receivers.length, 'receiver', 'receivers') + (dropped ? ' (' + dropped + ' dropped)' : ''));
    card.appendChild(title);
    if (receivers.length) {
      var list = el('ul', 'receivers');
      receivers.forEach(function (r) {
        var isDropped = num(r.dropped) > 0;
        var item = el('li', 'receiver' + (isDropped ? ' dropped' : ''));
        if (str(r.mac)) item.setAttribute('data-mac', str(r.mac));
        add(item,
          el('span', 'mac', str(r.mac) || 'MAC not known'),
          el('span', 'ip mono', str(r.ip)),
          el('span', 'joined', num(r.joined) ? 'joined in partition ' + num(r.joined) : 'joined'));
        if (isDropped) {
          item.appendChild(el('span', 'why',
            'dropped in partition ' + num(r.dropped) + (str(r.why) ? ': ' + str(r.why) : '')));
        }
        list.appendChild(item);
      });
      card.appendChild(list);
    }
    return card;
  }

  function renderSessions(data) {
    var sec = section('sessions');
    var sessions = arr(data.sessions).map(obj).filter(Boolean);
    setCount(sec, sessions.length);
    clear(sec.content);
    sec.root.hidden = sessions.length === 0;
    if (!sessions.length) {
      sec.content.appendChild(empty('none'));
      return;
    }
    var list = el('div', 'sessions');
    sessions.forEach(function (s) {
      list.appendChild(renderSession(s));
    });
    sec.content.appendChild(list);
  }

  // ------------------------------------------------------------------ images

  var IMAGE_COLUMNS = ['Name', 'Label', 'Kind', 'Size', 'Version', 'Default'];

  function renderImages(data) {
    var sec = section('images');
    var images = arr(data.images).map(obj).filter(Boolean);
    setCount(sec, images.length);
    clear(sec.content);
    if (!images.length) {
      sec.content.appendChild(empty('No image yet: `pxeprov add-image` adds one.'));
      return;
    }
    var wrap = el('div', 'table-wrap');
    var table = el('table', 'images');
    var thead = el('thead');
    var row = el('tr');
    IMAGE_COLUMNS.forEach(function (name) {
      var th = el('th', 'col-' + name.toLowerCase(), name);
      th.setAttribute('scope', 'col');
      row.appendChild(th);
    });
    thead.appendChild(row);
    table.appendChild(thead);
    var tbody = el('tbody');
    images.forEach(function (image) {
      var tr = el('tr', 'image' + (image['default'] === true ? ' is-default' : ''));
      tr.setAttribute('data-name', str(image.name));
      var cells = [
        el('span', 'image-name', str(image.name)),
        el('span', 'image-label', str(image.label)),
        el('span', 'image-kind', str(image.kind)),
        el('span', 'image-size', size(image.size) || '\u2014'),
        el('span', 'image-version', str(image.version) || '\u2014'),
        image['default'] === true ? el('span', 'default-mark', '\u2605 default') : null
      ];
      cells.forEach(function (content, i) {
        var td = el('td', 'col-' + IMAGE_COLUMNS[i].toLowerCase());
        td.setAttribute('data-label', IMAGE_COLUMNS[i]);
        if (content) td.appendChild(content);
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    wrap.appendChild(table);
    sec.content.appendChild(wrap);
  }

  // ------------------------------------------------------------------ health

  function renderCheck(c) {
    var status = pick(LEVELS, str(c.status), 'other');
    var item = el('li', 'check ' + status);
    item.setAttribute('data-check', str(c.name));
    var head = el('div', 'check-head');
    add(head, badge(str(c.status) || '?', status), el('span', 'check-name', str(c.name)));
    item.appendChild(head);
    if (str(c.message)) item.appendChild(el('div', 'check-message', str(c.message)));
    if (str(c.fix)) {
      var fix = el('div', 'check-fix');
      add(fix, el('span', 'fix-label', 'fix: '), el('span', 'fix-text', str(c.fix)));
      item.appendChild(fix);
    }
    return item;
  }

  function renderHealth(data) {
    var sec = section('health');
    var old = sec.content.querySelector('details');
    if (old) healthOpen = old.open;
    clear(sec.content);
    healthAgo = null;
    var health = obj(data.health);
    if (!health) {
      setCount(sec, '');
      sec.content.appendChild(empty('Not checked yet'));
      return;
    }
    var checks = arr(health.checks).map(obj).filter(Boolean);
    setCount(sec, checks.length);
    var status = pick(LEVELS, str(health.status), 'other');
    healthTime = num(health.time);

    var head = el('div', 'health-head');
    head.appendChild(badge(str(health.status) || 'unknown', 'big overall ' + status));
    var whenBox = el('span', 'health-when');
    if (healthTime) {
      add(whenBox, 'checked ' + hms(healthTime) + ' \u00b7 ');
      healthAgo = el('span', 'health-ago', '');
      whenBox.appendChild(healthAgo);
    }
    head.appendChild(whenBox);
    sec.content.appendChild(head);

    var counts = obj(health.counts) || {};
    var line = el('div', 'health-counts');
    ['pass', 'info', 'warn', 'fail'].forEach(function (k) {
      var n = num(counts[k]);
      var c = el('span', 'health-count ' + k + (n ? '' : ' zero'));
      add(c, el('strong', '', String(n)), ' ' + k);
      line.appendChild(c);
    });
    sec.content.appendChild(line);

    var problems = checks.filter(function (c) {
      var s = str(c.status);
      return s !== 'pass' && s !== 'info';
    });
    var fine = checks.filter(function (c) {
      var s = str(c.status);
      return s === 'pass' || s === 'info';
    });
    // the failures first, then the warnings
    problems.sort(function (a, b) {
      return (str(a.status) === 'fail' ? 0 : 1) - (str(b.status) === 'fail' ? 0 : 1);
    });
    if (problems.length) {
      var list = el('ul', 'checks problems');
      problems.forEach(function (c) { list.appendChild(renderCheck(c)); });
      sec.content.appendChild(list);
    } else if (checks.length) {
      sec.content.appendChild(el('p', 'all-good', 'No warning, no failure.'));
    }
    if (fine.length) {
      var details = el('details', 'checks-ok');
      details.open = healthOpen;
      var passed = fine.filter(function (c) { return str(c.status) === 'pass'; }).length;
      var info = fine.length - passed;
      details.appendChild(el('summary', '',
        plural(passed, 'check passed', 'checks passed') + (info ? ', ' + info + ' info' : '')));
      var okList = el('ul', 'checks');
      fine.forEach(function (c) { okList.appendChild(renderCheck(c)); });
      details.appendChild(okList);
      sec.content.appendChild(details);
    }
    updateAgo();
  }

  // "n min ago": the server's own times (generated - health.time), plus the time this browser
  // waited since `generated` changed; the two clocks are never compared
  function updateAgo() {
    if (!healthAgo || lastGenerated === null) return;
    var seconds = (lastGenerated - healthTime) + (now() - changedAt) / 1000;
    healthAgo.textContent = ago(seconds);
  }

  // ------------------------------------------------------------------ events

  function renderEvents(data) {
    var sec = section('events');
    var events = arr(data.events).map(obj).filter(Boolean).map(function (e, i) {
      return { time: num(e.time), text: str(e.text), index: i };
    });
    // newest first; for the same time the one written last first
    events.sort(function (a, b) {
      return (b.time - a.time) || (b.index - a.index);
    });
    setCount(sec, events.length);
    clear(sec.content);
    if (!events.length) {
      sec.content.appendChild(empty('Nothing yet.'));
      return;
    }
    var list = el('ol', 'events');
    events.forEach(function (e) {
      var item = el('li', 'event');
      var time = hms(e.time);
      // the watcher's lines begin with their time: when it is the same, it is not said twice
      var same = time !== '' && e.text.slice(0, time.length) === time;
      add(item, el('span', 'event-time' + (same ? ' same' : ''), time),
        el('span', 'event-text', e.text));
      list.appendChild(item);
    });
    sec.content.appendChild(list);
  }

  // ------------------------------------------------------------------ the banner

  function showProblem() {
    var box = document.getElementById('problem');
    var problem = fetchProblem;
    if (!problem && lastGenerated !== null &&
        now() - changedAt > 3 * heartbeat * 1000) {
      problem = {
        kind: 'stale',
        text: 'The data is stale: pxeprov-watch last wrote it at ' + hms(lastGenerated)
      };
    }
    document.body.classList.toggle('has-problem', !!problem);
    var updated = document.getElementById('updated');
    updated.classList.toggle('is-stale', !!problem);
    if (!problem) {
      if (!box.hidden) {
        box.hidden = true;
        box.removeAttribute('data-kind');
        clear(box);
      }
      return;
    }
    if (box.getAttribute('data-kind') !== problem.kind || box.textContent !== problem.text) {
      box.setAttribute('data-kind', problem.kind);
      box.textContent = problem.text;
    }
    box.hidden = false;
  }

  // ------------------------------------------------------------------ polling

  function render(data) {
    var parts = [renderHeader, renderMachines, renderSessions, renderImages, renderHealth,
      renderEvents];
    var failed = null;
    parts.forEach(function (part) {
      try {
        part(data);
      } catch (err) {
        failed = failed || err;
      }
    });
    if (failed) throw failed;
  }

  function accept(data) {
    if (!obj(data)) {
      fetchProblem = { kind: 'bad-data', text: "The page's data is not what it expects" };
      return;
    }
    if (data.api !== API) {
      fetchProblem = {
        kind: 'bad-data',
        text: 'The data is version ' + str(data.api) + ' of the API, the page reads version ' +
          API + ': reload the page'
      };
      return;
    }
    var generated = num(data.generated);
    if (lastGenerated !== null && generated === lastGenerated) return;
    lastGenerated = generated;
    changedAt = now();
    heartbeat = num(data.heartbeat) > 0 ? num(data.heartbeat) : 10;
    try {
      render(data);
    } catch (err) {
      fetchProblem = {
        kind: 'bad-data',
        text: 'The page could not show all of the data: ' + str(err && err.message)
      };
    }
  }

  function get() {
    var controller = typeof AbortController === 'function' ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : 0;
    var options = { cache: 'no-store', credentials: 'same-origin' };
    if (controller) options.signal = controller.signal;
    return fetch(DATA_URL, options).then(function (response) {
      if (response.status === 404) {
        fetchProblem = { kind: 'nodata', text: MESSAGES.nodata };
        return null;
      }
      if (response.status === 401 || response.status === 403) {
        fetchProblem = { kind: 'token', text: MESSAGES.token };
        return null;
      }
      if (!response.ok) {
        fetchProblem = {
          kind: 'http',
          text: 'The server answered ' + response.status + " for the page's data"
        };
        return null;
      }
      return response.text().then(function (body) {
        var data;
        try {
          data = JSON.parse(body);
        } catch (err) {
          fetchProblem = { kind: 'bad-data', text: "The page's data is not valid JSON" };
          return null;
        }
        fetchProblem = null;
        accept(data);
        return null;
      });
    }, function () {
      fetchProblem = { kind: 'network', text: MESSAGES.network };
      return null;
    }).catch(function () {
      fetchProblem = { kind: 'network', text: MESSAGES.network };
    }).then(function () {
      clearTimeout(timer);
    });
  }

  // one request at a time: the next starts POLL_MS after the last one ended
  function loop() {
    get().then(function () {
      showProblem();
      setTimeout(loop, POLL_MS);
    });
  }

  function start() {
    // the stale banner and "n min ago" move on between requests, and while one waits
    setInterval(function () {
      showProblem();
      updateAgo();
    }, 1000);
    loop();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
