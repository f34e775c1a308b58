// The cluster's certificates (runtime/cluster/tls.ts): the CA and server certificate made at start, the fingerprint
// the join line carries, and the user's own certificates, checked before nats-server gets them.
import test from 'ava';
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProtocolError, TlsTrustError, UsageError } from '../../runtime/base/errors.ts';
import {
  caSha256,
  certificateSerial,
  checkCaSha256,
  createClusterTls,
  keptPeerTls,
  natsTlsBlock,
  newPeerKey,
  peerServerTls,
  signPeerCertificate,
  userClusterTls,
} from '../../runtime/cluster/tls.ts';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'troupe-tls-'));
  dirs.push(d);
  return d;
};
test.after.always(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const certs = (pem: string) =>
  (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));

test('a cluster CA and a server certificate it signed, naming every address plus the loopback names', (t) => {
  const dir = tempDir();
  const tls = createClusterTls(dir, ['10.1.2.3', 'fd00::7', 'head.example']);
  const [server, ca] = certs(readFileSync(tls.chainFile, 'utf8'));
  t.truthy(server && ca, 'the chain file holds the server certificate, then the CA');
  t.true(ca.ca);
  t.false(server.ca);
  t.true(server.checkIssued(ca) && server.verify(ca.publicKey));
  t.true(ca.verify(ca.publicKey), 'the CA is self-signed');
  t.is(readFileSync(tls.caFile, 'utf8'), tls.caPem);
  for (const ip of ['10.1.2.3', '127.0.0.1', '::1', 'fd00::7']) t.is(server.checkIP(ip), ip, ip);
  for (const name of ['localhost', 'head.example']) t.is(server.checkHost(name), name, name);
  t.is(server.checkIP('10.1.2.4'), undefined, 'an address it does not listen on');
  t.is(statSync(tls.keyFile).mode & 0o777, 0o600);
  t.is(statSync(join(dir, 'tls-ca-key.pem')).mode & 0o777, 0o600);
  t.is(statSync(tls.caFile).mode & 0o777, 0o644);
  t.is(server.publicKey.asymmetricKeyType, 'rsa');
  t.true(server.checkPrivateKey(createPrivateKeyOf(tls.keyFile)));
});

test('serials are positive and never begin with a zero byte (OpenSSL refuses that padding)', (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    const serial = certificateSerial();
    t.regex(serial, /^[0-9a-f]{32}$/);
    const first = Number.parseInt(serial.slice(0, 2), 16);
    if (first === 0 || first > 0x7f) return t.fail(`serial ${serial} starts with byte ${first}`);
    seen.add(serial);
  }
  t.is(seen.size, 20_000);
});

test('two clusters get two CAs', (t) => {
  const [a, b] = [createClusterTls(tempDir(), ['10.0.0.1']), createClusterTls(tempDir(), ['10.0.0.1'])];
  t.not(a.caSha256, b.caSha256);
});

test("the fingerprint is sha256 of the CA certificate's DER, as openssl prints it", (t) => {
  const tls = createClusterTls(tempDir(), []);
  const der = new X509Certificate(tls.caPem).raw;
  t.is(tls.caSha256, `sha256:${createHash('sha256').update(der).digest('hex')}`);
  t.is(caSha256(tls.caPem), tls.caSha256);
  t.is(`sha256:${new X509Certificate(tls.caPem).fingerprint256.replace(/:/g, '').toLowerCase()}`, tls.caSha256);
});

test('--ca-sha256 takes sha256:<hex> or bare hex, any case, and refuses anything else', (t) => {
  const hex = 'ab'.repeat(32);
  t.is(checkCaSha256(`sha256:${hex}`), `sha256:${hex}`);
  t.is(checkCaSha256(hex.toUpperCase()), `sha256:${hex}`);
  for (const bad of ['', 'sha256:', `sha1:${hex}`, `sha256:${hex}00`, `sha256:${'zz'.repeat(32)}`]) {
    const e = t.throws(() => checkCaSha256(bad), { instanceOf: UsageError });
    t.regex(e?.message ?? '', /--ca-sha256 must be sha256:<64 hex digits>/);
  }
});

test("the user's own certificate, key and CA are checked, then served with their chain", (t) => {
  const mine = createClusterTls(tempDir(), ['10.9.9.9']); // stands for certificates made by the user's own CA
  const other = createClusterTls(tempDir(), ['10.9.9.9']);
  const dir = tempDir();
  const serverPem = readFileSync(mine.chainFile, 'utf8').split(/(?<=-----END CERTIFICATE-----\n)/)[0];
  const cert = join(dir, 'server.pem');
  writeFileSync(cert, serverPem);
  const tls = userClusterTls(dir, { cert, key: mine.keyFile, ca: mine.caFile });
  t.is(tls.caSha256, mine.caSha256);
  t.is(tls.keyFile, mine.keyFile);
  t.deepEqual(
    certs(readFileSync(tls.chainFile, 'utf8')).map((c) => c.fingerprint256),
    certs(readFileSync(mine.chainFile, 'utf8')).map((c) => c.fingerprint256),
  );

  const refused = (files: { cert: string; key: string; ca: string }, why: RegExp) => {
    const e = t.throws(() => userClusterTls(tempDir(), files), { instanceOf: UsageError });
    t.regex(e?.message ?? '', why);
  };
  refused({ cert, key: other.keyFile, ca: mine.caFile }, /--tls-key .* is not the key of/);
  refused({ cert, key: mine.keyFile, ca: other.caFile }, /--tls-cert .* is not signed by --tls-ca/);
  refused({ cert, key: mine.keyFile, ca: cert }, /--tls-ca .* is not a CA certificate/);
  refused({ cert: join(dir, 'missing.pem'), key: mine.keyFile, ca: mine.caFile }, /--tls-cert .*missing\.pem/);
  refused({ cert: mine.keyFile, key: mine.keyFile, ca: mine.caFile }, /is not a PEM certificate/);
  refused({ cert, key: cert, ca: mine.caFile }, /--tls-key .* is not a PEM private key/);
});

test('the nats-server tls block names the chain, the key and the CA; peers of a NATS cluster verify', (t) => {
  const tls = createClusterTls(tempDir(), []);
  const block = natsTlsBlock(tls);
  t.true(block.includes(`cert_file: ${JSON.stringify(tls.chainFile)}`));
  t.true(block.includes(`key_file: ${JSON.stringify(tls.keyFile)}`));
  t.true(block.includes(`ca_file: ${JSON.stringify(tls.caFile)}`));
  t.false(block.includes('verify'));
  t.true(natsTlsBlock(tls, { verifyPeers: true }).includes('verify: true'));
});

function createPrivateKeyOf(file: string) {
  return createPrivateKey(readFileSync(file, 'utf8'));
}

test("a bus server's certificate: signed by the head for the one address asked, checked and kept by the peer", (t) => {
  const head = tempDir();
  const cluster = createClusterTls(head, ['10.1.2.3']);
  const peer = tempDir();
  const publicKeyPem = newPeerKey(peer);
  t.is(statSync(join(peer, 'tls-server-key.pem')).mode & 0o777, 0o600, 'the private key stays, private');
  const certPem = signPeerCertificate(head, publicKeyPem, '10.1.2.4');
  const served = peerServerTls(peer, certPem, cluster.caPem, '10.1.2.4');
  const [server, ca] = certs(readFileSync(served.chainFile, 'utf8'));
  t.true(server.checkIssued(ca) && server.verify(ca.publicKey));
  t.truthy(server.checkIP('10.1.2.4'));
  t.falsy(server.checkIP('10.1.2.3'), 'the head names only the address asked for (and loopback)');
  t.truthy(server.checkIP('127.0.0.1'));
  t.true(server.publicKey.equals(createPublicKey(publicKeyPem)), "the peer's own key");
  // Started again, the peer keeps it; for another address, or under another CA, it does not.
  t.is(keptPeerTls(peer, cluster.caPem, '10.1.2.4')?.caSha256, cluster.caSha256);
  t.is(keptPeerTls(peer, cluster.caPem, '10.1.2.5'), undefined);
  const other = createClusterTls(tempDir(), ['10.9.9.9']);
  t.is(keptPeerTls(peer, other.caPem, '10.1.2.4'), undefined);
  t.throws(() => peerServerTls(peer, certPem, other.caPem, '10.1.2.4'), { instanceOf: TlsTrustError });
  t.throws(() => peerServerTls(peer, certPem, cluster.caPem, '10.1.2.5'), { instanceOf: TlsTrustError });
  t.throws(() => signPeerCertificate(tempDir(), publicKeyPem, '10.1.2.4'), { instanceOf: UsageError });
  t.throws(() => signPeerCertificate(head, 'not a key', '10.1.2.4'), { instanceOf: ProtocolError });
});
