// Synchronous HTTP for the Apps Script stand-in under Node (UrlFetchApp.fetch blocks in Apps
// Script). A worker thread does the fetch; the main thread sleeps on Atomics.wait and takes
// the answer with receiveMessageOnPort, so no event-loop turn is needed in between.
'use strict';

const { Worker, MessageChannel, receiveMessageOnPort } = require('node:worker_threads');

const WORKER = `
const { workerData } = require('node:worker_threads');
const { port, flag } = workerData;
port.on('message', async (req) => {
  let answer;
  try {
    const res = await fetch(req.url, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      redirect: 'manual',
      signal: AbortSignal.timeout(req.timeoutMs),
    });
    answer = { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() };
  } catch (err) {
    answer = { error: String((err.cause && err.cause.message) || err.message) };
  }
  port.postMessage(answer);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
});
`;

function createSyncHttp({ timeoutMs = 60000 } = {}) {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(WORKER, { eval: true, workerData: { port: port2, flag }, transferList: [port2] });
  worker.unref();
  function http(req) {
    // A request may bring its own deadline (UrlFetchApp's, from the stand-in).
    const deadline = req.timeoutMs || timeoutMs;
    Atomics.store(flag, 0, 0);
    port1.postMessage({ method: req.method || 'GET', url: req.url, headers: req.headers || {}, body: req.body, timeoutMs: deadline });
    if (Atomics.wait(flag, 0, 0, deadline + 5000) === 'timed-out') throw new Error('no answer from ' + req.url);
    const got = receiveMessageOnPort(port1);
    if (!got) throw new Error('lost the answer from ' + req.url);
    if (got.message.error) throw new Error(got.message.error);
    return got.message;
  }
  http.close = () => worker.terminate();
  return http;
}

module.exports = { createSyncHttp };
