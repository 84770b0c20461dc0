// The report's drawing pad: digits_jax.preprocess and the trained MLP's forward pass in
// JavaScript, and the pad's events. The page embeds the model as JSON in
// <script id="digits-jax-model"> (see digits_jax/drawing_pad.py):
//   {dataset, preparation, classNames, constants: {size, digitBox, ...}, kind: 'mlp',
//    activation, layers: [{in, out, kernel, bias}], checks: [{pixels, probabilities}],
//    checkTolerance}, kernel [in, out] row-major and bias as base64 little-endian float32,
//    pixels base64 uint8.
// Exposes window.digitsJax.prepare(imageData[, preparation]) -> 784 grey levels 0..255 (null
// if blank), window.digitsJax.predict(pixels) -> the 10 probabilities, and
// window.digitsJax.selfCheck: {ok, reason, maxDiff}, the forward pass checked on load against
// Python's probabilities of the check images; unless ok, the pad shows the reason instead of
// predictions.
(function () {
  'use strict';
  var model = JSON.parse(document.getElementById('digits-jax-model').textContent);
  var K = model.constants;

  function decodeBytes(b64) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }
  function decodeFloat32(b64) { return new Float32Array(decodeBytes(b64).buffer); }
  var layers = model.layers.map(function (l) {
    return {n_in: l['in'], n_out: l.out, kernel: decodeFloat32(l.kernel),
            bias: decodeFloat32(l.bias)};
  });

  // ------------------------------------------------ preparation (as digits_jax.preprocess)

  function roundHalfUp(x) { return Math.floor(x + 0.5); }

  // An image is {h, w, v}: v a typed array of h * w values, row-major.
  function toGrey(imageData) {
    var d = imageData.data, n = imageData.width * imageData.height, v = new Uint8Array(n);
    for (var i = 0; i < n; i++) {
      var a = d[4 * i + 3], rgb = [d[4 * i], d[4 * i + 1], d[4 * i + 2]];
      for (var c = 0; c < 3; c++) rgb[c] = Math.floor((rgb[c] * a + 255 * (255 - a) + 127) / 255);
      v[i] = (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16;
    }
    return {h: imageData.height, w: imageData.width, v: v};
  }

  function lowerMedian(values) {
    var counts = new Array(256).fill(0), target = Math.floor((values.length - 1) / 2) + 1;
    for (var i = 0; i < values.length; i++) counts[values[i]]++;
    for (var k = 0, cum = 0; k < 256; k++) { cum += counts[k]; if (cum >= target) return k; }
    return 255;
  }

  function border(im) {
    if (Math.min(im.h, im.w) <= 2) return im.v;
    var out = [];
    for (var x = 0; x < im.w; x++) out.push(im.v[x], im.v[(im.h - 1) * im.w + x]);
    for (var y = 1; y < im.h - 1; y++) out.push(im.v[y * im.w], im.v[y * im.w + im.w - 1]);
    return out;
  }

  function lightOnDark(im) {
    if (lowerMedian(border(im)) <= 127) return im;
    var v = new Uint8Array(im.v.length);
    for (var i = 0; i < v.length; i++) v[i] = 255 - im.v[i];
    return {h: im.h, w: im.w, v: v};
  }

  function maxOf(values) {
    var m = 0;
    for (var i = 0; i < values.length; i++) if (values[i] > m) m = values[i];
    return m;
  }

  function otsuThreshold(values) {
    var counts = new Array(256).fill(0), n = values.length, total = 0;
    for (var i = 0; i < n; i++) counts[values[i]]++;
    for (var k = 0; k < 256; k++) total += k * counts[k];
    var below = 0, sumBelow = 0, best = -1, threshold = -1;
    for (var t = 0; t < 256; t++) {
      below += counts[t];
      sumBelow += t * counts[t];
      var above = n - below, sumAbove = total - sumBelow;
      if (below > 0 && above > 0) {
        var diff = sumBelow / below - sumAbove / above;
        var between = below * above * diff * diff;
        if (between > best) { best = between; threshold = t; }
      }
    }
    return threshold < 0 ? null : threshold;
  }

  function inkOfPaper(grey) {  // [ink in [0, 1], strong ink mask], or null if blank.
    grey = lightOnDark(grey);
    var t = otsuThreshold(grey.v);
    if (t === null) return null;
    var ink = grey.v.filter(function (g) { return g > t; });
    var level = lowerMedian(ink), paper = lowerMedian(grey.v), low = (paper + t) / 2;
    if (level - paper < K.inkContrast) return null;
    var v = new Float64Array(grey.v.length), strong = new Uint8Array(grey.v.length);
    for (var i = 0; i < v.length; i++) {
      v[i] = Math.min(1, Math.max(0, (grey.v[i] - low) / (level - low)));
      strong[i] = grey.v[i] > t ? 1 : 0;
    }
    return [{h: grey.h, w: grey.w, v: v}, {h: grey.h, w: grey.w, v: strong}];
  }

  function box(im) {  // [top, bottom, left, right] of the non-zero values (exclusive ends).
    var top = im.h, bottom = -1, left = im.w, right = -1;
    for (var y = 0; y < im.h; y++) for (var x = 0; x < im.w; x++) if (im.v[y * im.w + x] > 0) {
      top = Math.min(top, y); bottom = Math.max(bottom, y);
      left = Math.min(left, x); right = Math.max(right, x);
    }
    return [top, bottom + 1, left, right + 1];
  }

  function crop(im, b) {
    var h = b[1] - b[0], w = b[3] - b[2], v = new Float64Array(h * w);
    for (var y = 0; y < h; y++) for (var x = 0; x < w; x++) v[y * w + x] = im.v[(y + b[0]) * im.w + x + b[2]];
    return {h: h, w: w, v: v};
  }

  function strokeWidth(im) {
    var on = function (y, x) { return y >= 0 && x >= 0 && y < im.h && x < im.w && im.v[y * im.w + x] > 0; };
    var area = 0, boundary = 0;
    for (var y = 0; y < im.h; y++) for (var x = 0; x < im.w; x++) if (on(y, x)) {
      area++;
      if (!(on(y - 1, x) && on(y + 1, x) && on(y, x - 1) && on(y, x + 1))) boundary++;
    }
    return 2 * area / Math.max(boundary, 1);
  }

  function maxFilter(im, r) {  // Grey dilation by a (2r+1)-square; the image grows by r.
    var h = im.h + 2 * r, w = im.w + 2 * r, rows = new Float64Array(im.h * w), out = new Float64Array(h * w);
    for (var y = 0; y < im.h; y++) for (var x = 0; x < w; x++) {
      var m = 0;
      for (var s = Math.max(0, x - 2 * r); s <= Math.min(im.w - 1, x); s++) m = Math.max(m, im.v[y * im.w + s]);
      rows[y * w + x] = m;
    }
    for (y = 0; y < h; y++) for (x = 0; x < w; x++) {
      m = 0;
      for (s = Math.max(0, y - 2 * r); s <= Math.min(im.h - 1, y); s++) m = Math.max(m, rows[s * w + x]);
      out[y * w + x] = m;
    }
    return {h: h, w: w, v: out};
  }

  function thicken(im) {
    var scale = K.digitBox / Math.max(im.h, im.w), width = strokeWidth(im);
    if (width * scale >= K.minStroke) return im;
    var r = roundHalfUp((K.targetStroke / scale - width) / 2);
    return r >= 1 ? maxFilter(im, r) : im;
  }

  function areaWeights(nIn, nOut) {  // Per output pixel: [first input, weights...].
    var step = nIn / nOut, out = [];
    for (var j = 0; j < nOut; j++) {
      var start = j * step, first = Math.floor(start), ws = [];
      for (var i = first; i < Math.min(nIn, Math.ceil(start + step)); i++) {
        ws.push(Math.max(0, Math.min(start + step, i + 1) - Math.max(start, i)) / step);
      }
      out.push({first: first, ws: ws});
    }
    return out;
  }

  function resize(im, h, w) {
    var rows = areaWeights(im.h, h), cols = areaWeights(im.w, w);
    var tmp = new Float64Array(h * im.w), out = new Float64Array(h * w);
    for (var y = 0; y < h; y++) for (var x = 0; x < im.w; x++) {
      var s = 0;
      for (var k = 0; k < rows[y].ws.length; k++) s += rows[y].ws[k] * im.v[(rows[y].first + k) * im.w + x];
      tmp[y * im.w + x] = s;
    }
    for (y = 0; y < h; y++) for (x = 0; x < w; x++) {
      s = 0;
      for (k = 0; k < cols[x].ws.length; k++) s += tmp[y * im.w + cols[x].first + k] * cols[x].ws[k];
      out[y * w + x] = s;
    }
    return {h: h, w: w, v: out};
  }

  function fittedSize(h, w, longest) {
    var scale = longest / Math.max(h, w);
    return [Math.max(1, roundHalfUp(h * scale)), Math.max(1, roundHalfUp(w * scale))];
  }

  function paste(im, top, left) {  // Into SIZE x SIZE grey levels.
    var out = new Array(K.size * K.size).fill(0);
    for (var y = 0; y < im.h; y++) for (var x = 0; x < im.w; x++) {
      out[(y + top) * K.size + x + left] = Math.min(255, Math.max(0, roundHalfUp(im.v[y * im.w + x] * 255)));
    }
    return out;
  }

  function prepareDigit(grey) {
    var found = inkOfPaper(grey);
    if (found === null) return null;
    var ink = thicken(crop(found[0], box(found[1])));
    var size = fittedSize(ink.h, ink.w, K.digitBox), digit = resize(ink, size[0], size[1]);
    var total = 0, sy = 0, sx = 0;
    for (var y = 0; y < digit.h; y++) for (var x = 0; x < digit.w; x++) {
      var v = digit.v[y * digit.w + x];
      total += v; sy += y * v; sx += x * v;
    }
    var clamp = function (a, hi) { return Math.min(Math.max(a, 0), hi); };
    return paste(digit, clamp(roundHalfUp(K.centre - sy / total), K.size - digit.h),
                 clamp(roundHalfUp(K.centre - sx / total), K.size - digit.w));
  }

  function prepareFashion(grey) {
    grey = lightOnDark(grey);
    var background = lowerMedian(border(grey)), peak = maxOf(grey.v);
    if (peak - background < K.inkContrast) return null;
    var low = background + K.fashionNoise, v = new Float64Array(grey.v.length);
    for (var i = 0; i < v.length; i++) v[i] = Math.min(1, Math.max(0, (grey.v[i] - low) / (peak - low)));
    var item = {h: grey.h, w: grey.w, v: v};
    item = crop(item, box(item));
    var size = fittedSize(item.h, item.w, K.size);
    item = resize(item, size[0], size[1]);
    return paste(item, Math.floor((K.size - item.h) / 2), Math.floor((K.size - item.w) / 2));
  }

  function prepare(imageData, preparation) {  // 'digit' or 'fashion'; default the dataset's.
    var grey = toGrey(imageData);
    return (preparation || model.preparation) === 'fashion' ? prepareFashion(grey) : prepareDigit(grey);
  }

  // ------------------------------------------------------------------ the network

  // The hidden activations this script implements, by the names of models.ACTIVATIONS
  // (gelu as jax.nn.gelu's default, the tanh approximation).
  var ACTIVATIONS = {
    relu: function (a) { return Math.max(a, 0); },
    tanh: Math.tanh,
    sigmoid: function (a) { return 1 / (1 + Math.exp(-a)); },
    gelu: function (a) {
      return 0.5 * a * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (a + 0.044715 * a * a * a)));
    }
  };
  var activation = ACTIVATIONS[model.activation];

  function predict(pixels) {  // 784 grey levels (or 28 rows of 28) -> 10 probabilities.
    var x = Array.from(pixels).flat().map(function (p) { return p / 255; });
    layers.forEach(function (l, k) {
      var y = Array.from(l.bias);
      for (var i = 0; i < l.n_in; i++) {
        if (x[i] === 0) continue;
        for (var j = 0, row = i * l.n_out; j < l.n_out; j++) y[j] += x[i] * l.kernel[row + j];
      }
      x = k < layers.length - 1 ? y.map(activation) : y;
    });
    var top = Math.max.apply(null, x), e = x.map(function (a) { return Math.exp(a - top); });
    var sum = e.reduce(function (a, b) { return a + b; }, 0);
    return e.map(function (a) { return a / sum; });
  }

  function check() {  // This forward pass against Python's on the page's check images.
    if (model.kind !== 'mlp' || !activation) {
      return {ok: false, maxDiff: null, reason: 'This page cannot run this network (' +
          model.kind + ', activation ' + model.activation + '): it runs MLPs with ' +
          Object.keys(ACTIVATIONS).join(', ') + '. Use python -m digits_jax.predict.'};
    }
    var worst = 0;
    model.checks.forEach(function (c) {
      var p = predict(decodeBytes(c.pixels));
      for (var k = 0; k < p.length; k++) {
        var d = Math.abs(p[k] - c.probabilities[k]);
        worst = d > worst || isNaN(d) ? d : worst;
      }
    });
    var ok = model.checks.length > 0 && worst <= model.checkTolerance;
    return {ok: ok, maxDiff: worst, reason: ok ? null :
        'Warning: this page\'s copy of the network disagrees with Python on its check ' +
        'images (probabilities differ by up to ' + worst.toFixed(4) + '), so it shows no ' +
        'predictions. The network was changed in a way this page does not know; use ' +
        'python -m digits_jax.predict.'};
  }

  var selfCheck = check();
  window.digitsJax = {prepare: prepare, predict: predict, model: model, selfCheck: selfCheck};

  // ------------------------------------------------------------------ the pad

  var pad = document.getElementById('pad-canvas');
  if (!pad) return;
  var ctx = pad.getContext('2d', {willReadFrequently: true});
  var seen = document.getElementById('pad-seen').getContext('2d');
  var bars = document.querySelectorAll('#pad-bars tr[data-class]');
  var status = document.getElementById('pad-status');
  var drawing = false, last = null, pending = false;

  function clear() {
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, pad.width, pad.height);
    update();
  }

  function show(pixels, probs) {
    var im = seen.createImageData(K.size, K.size);
    for (var i = 0; i < K.size * K.size; i++) {
      var g = pixels ? pixels[i] : 0;
      im.data[4 * i] = im.data[4 * i + 1] = im.data[4 * i + 2] = g;
      im.data[4 * i + 3] = 255;
    }
    seen.putImageData(im, 0, 0);
    var best = probs ? probs.indexOf(Math.max.apply(null, probs)) : -1;
    bars.forEach(function (tr, k) {
      tr.querySelector('.bar span').style.width = probs ? (100 * probs[k]).toFixed(1) + '%' : '0';
      tr.querySelector('.v').textContent = probs ? (100 * probs[k]).toFixed(2) + '%' : '';
      tr.classList.toggle('best', k === best);
    });
    status.textContent = probs ? 'The network reads: ' + model.classNames[best] + ' (' +
        (100 * probs[best]).toFixed(1) + '%)' : status.dataset.empty;
  }

  function update() {
    pending = false;
    var pixels = prepare(ctx.getImageData(0, 0, pad.width, pad.height));
    show(pixels, pixels && selfCheck.ok ? predict(pixels) : null);
    if (!selfCheck.ok) status.textContent = selfCheck.reason;
  }

  function point(ev) {
    var rect = pad.getBoundingClientRect();
    return [(ev.clientX - rect.left) * pad.width / rect.width,
            (ev.clientY - rect.top) * pad.height / rect.height];
  }

  function stroke(ev) {
    var p = point(ev);
    ctx.strokeStyle = '#000';
    ctx.lineWidth = pad.width / 14;
    ctx.lineCap = ctx.lineJoin = 'round';
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
    last = p;
    if (!pending) { pending = true; requestAnimationFrame(update); }
  }

  pad.addEventListener('pointerdown', function (ev) {
    drawing = true;
    last = point(ev);
    try { pad.setPointerCapture(ev.pointerId); } catch (e) { /* A synthetic event. */ }
    stroke(ev);
    ev.preventDefault();
  });
  pad.addEventListener('pointermove', function (ev) { if (drawing) stroke(ev); });
  ['pointerup', 'pointercancel'].forEach(function (name) {
    pad.addEventListener(name, function () {  // The last stroke is read even without a frame.
      drawing = false;
      if (pending) update();
    });
  });
  document.getElementById('pad-clear').addEventListener('click', clear);
  clear();
})();
