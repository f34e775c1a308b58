// What `troupe status` warns of, from what the head knows of the cluster's redundancy.
import test from 'ava';
import { singlePointsOfFailure } from '../../runtime/head/failure-points.ts';

test('one machine: no warning; across machines: each missing copy named; a cluster with all three: none', (t) => {
  const alone = { natsCluster: false, stateReplicas: 1, servers: 1, standbys: 0, machines: 1 };
  t.deepEqual(singlePointsOfFailure(alone), []);
  const today = singlePointsOfFailure({ ...alone, machines: 3 });
  t.is(today.length, 3);
  t.regex(today[0], /^one nats-server carries every message.*--bus-peers B,C/);
  t.regex(today[1], /one copy \(R1\); R3 needs three nats-servers/);
  t.regex(today[2], /no standby/);
  t.deepEqual(singlePointsOfFailure({ ...alone, machines: 3, standbys: 1 }).length, 2);
  t.regex(singlePointsOfFailure({ ...alone, machines: 2, natsCluster: true, stateReplicas: 2 })[0], /2 copies \(R2\)/);
  const three = { natsCluster: true, stateReplicas: 3, servers: 3, standbys: 1, machines: 3 };
  t.deepEqual(singlePointsOfFailure(three), []);
  // On five servers, three copies survive the loss of one server only, and five the loss of any two.
  const [short] = singlePointsOfFailure({ ...three, servers: 5, machines: 5 });
  t.regex(short, /3 copies \(R3\) on a bus of 5 servers: losing two servers/);
  t.deepEqual(singlePointsOfFailure({ ...three, servers: 5, machines: 5, stateReplicas: 5 }), []);
});
