/* google.script.run for sidebar/Sidebar.html in the playground: each call goes to the parent
 * page, which runs the named Code.gs function over the Apps Script stand-in. As in Apps Script,
 * calls are asynchronous, arguments and results travel as copies, private functions (a name
 * ending in "_") and unknown names fail with the failure handler. */
(function () {
  'use strict';
  var host = window.parent && window.parent !== window ? window.parent.playground : null;

  function copy(value) {
    return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
  }

  function runner(success, failure, userObject) {
    return new Proxy({}, {
      get: function (_, name) {
        if (name === 'withSuccessHandler') return function (f) { return runner(f, failure, userObject); };
        if (name === 'withFailureHandler') return function (f) { return runner(success, f, userObject); };
        if (name === 'withUserObject') return function (o) { return runner(success, failure, o); };
        if (typeof name !== 'string' || name === 'then') return undefined;
        return function () {
          var args = copy(Array.prototype.slice.call(arguments)) || [];
          var call = host
            ? host.run(name, args)
            : Promise.reject(new Error('google.script.run works only inside the playground page'));
          call.then(
            function (result) { if (success) success(copy(result), userObject); },
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
