// MQTT.js in Node over WebSocket: connects to the broker URL given as the
// first argument with the MQTT version given as the second (4 or 5),
// subscribes to PREFIX/echo, publishes to it and to PREFIX/to-rust (QoS 1),
// waits for its own message to come back, and prints one line of JSON:
// {"connected":true,"echoed":"...","errors":[]}. Exits 0 when it has an
// answer, 1 on an error. Run by broker/tests/websocket_js.rs with
// NODE_PATH set to Debian's module directories, where the `node-mqtt`
// package (MQTT.js 4.3) lives; CommonJS because NODE_PATH does not apply to
// ES module imports.
'use strict';
const mqtt = require('mqtt');

const [url, version, prefix] = process.argv.slice(2);
const result = { connected: false, echoed: null, errors: [] };
const done = (code) => {
  console.log(JSON.stringify(result));
  process.exit(code);
};

const client = mqtt.connect(url, {
  clientId: `node-${prefix}`,
  protocolVersion: Number(version),
  reconnectPeriod: 0,
  connectTimeout: 10_000,
});
client.on('error', (e) => {
  result.errors.push(String(e));
  done(1);
});
client.on('close', () => {
  if (result.echoed === null) {
    result.errors.push('connection closed before the echo');
    done(1);
  }
});
client.on('connect', () => {
  result.connected = true;
  client.subscribe(`${prefix}/echo`, { qos: 1 }, (err) => {
    if (err) {
      result.errors.push(`subscribe: ${err}`);
      return done(1);
    }
    client.publish(`${prefix}/to-rust`, `node v${version} says hi`, { qos: 1 });
    client.publish(`${prefix}/echo`, `hello from node v${version}`, { qos: 1 });
  });
});
client.on('message', (topic, payload) => {
  if (topic === `${prefix}/echo`) {
    result.echoed = payload.toString();
    client.end(false, () => done(0));
  }
});
