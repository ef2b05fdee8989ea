/* google.script.run for sidebar/Sidebar.html in the playground: each call goes to the parent
 * page, which runs the named Code.gs function over the Apps Script stand-in. As in Apps Script
 * (developers.google.com/apps-script/guides/html/reference/run), calls are asynchronous,
 * arguments and results travel as copies, a Date, a function or a circular object anywhere in
 * them makes the call fail, undefined in an array becomes null, and private functions (a name
 * ending in "_") and unknown names fail with the failure handler. */
(function () {
  'use strict';
  var host = window.parent && window.parent !== window ? window.parent.playground : null;

  /** The copy that crosses between page and script; throws for what Apps Script refuses. */
  function copy(value, seen) {
    seen = seen || [];
    if (value === undefined || value === null) return value === undefined ? undefined : null;
    var kind = Object.prototype.toString.call(value);
    if (kind === '[object Date]' || typeof value === 'function' || typeof value === 'symbol' || typeof value === 'bigint') {
      throw new Error('google.script.run cannot pass a ' + (kind === '[object Date]' ? 'Date' : typeof value) + ' (only primitives, objects and arrays of them)');
    }
    if (typeof value !== 'object') return value;
    if (seen.indexOf(value) !== -1) throw new Error('google.script.run cannot pass an object with a circular reference');
    seen.push(value);
    var out;
    if (Array.isArray(value)) {
      out = value.map(function (v) { var c = copy(v, seen); return c === undefined ? null : c; });
    } else {
      out = {};
      Object.keys(value).forEach(function (k) {
        var c = copy(value[k], seen);
        if (c !== undefined) out[k] = c;
      });
    }
    seen.pop();
    return out;
  }

  function runner(success, failure, userObject) {
    return new Proxy({}, {
      get: function (_, name) {
        if (name === 'withSuccessHandler') return function (f) { return runner(f, failure, userObject); };
        if (name === 'withFailureHandler') return function (f) { return runner(success, f, userObject); };
        if (name === 'withUserObject') return function (o) { return runner(success, failure, o); };
        if (typeof name !== 'string' || name === 'then') return undefined;
        return function () {
          var call;
          try {
            var args = copy(Array.prototype.slice.call(arguments)) || [];
            call = host
              ? host.run(name, args).then(function (result) { return copy(result); })
              : Promise.reject(new Error('google.script.run works only inside the playground page'));
          } catch (err) {
            call = Promise.reject(err);
          }
          call.then(
            function (result) { if (success) success(result, userObject); },
            function (err) { if (failure) failure(new Error(String((err && err.message) || err)), userObject); }
          );
        };
      },
    });
  }

  window.google = {
    script: {
      run: runner(null, null, undefined),
      host: { close: function () {}, setHeight: function () {}, setWidth: function () {}, editor: { focus: function () {} } },
    },
  };
})();
