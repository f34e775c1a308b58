// The cluster's TLS: a CA and a server certificate made at `troupe start --head` (or the user's own), the nats-server
// `tls {}` block that uses them, and the discovery by which a joining machine learns the CA from the server itself,
// trusting it only if its SHA-256 is the one the join line names (as kubeadm's discovery hash does).
import { createHash, generateKeyPairSync, randomBytes, X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP, connect as netConnect } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import forge from 'node-forge';
import { hostOf, parseAddress, writePrivateFile } from '../base/config.ts';
import { ProtocolError, TlsTrustError, UsageError } from '../base/errors.ts';

/** The files nats-server serves TLS with, and the CA clients verify it with. */
export interface ClusterTls {
  /** The server's certificate followed by its CA's: a joining client finds the CA in the chain it is shown. */
  chainFile: string;
  /** The server's private key (0600). */
  keyFile: string;
  /** The CA's certificate (0644): what clients trust. */
  caFile: string;
  caPem: string;
  /** `sha256:<hex>` of the CA certificate's DER: what the join line carries. */
  caSha256: string;
}

/** Names every client may reach the server by on its own machine, added to the addresses it listens on. */
const LOCAL_NAMES = ['127.0.0.1', '::1', 'localhost'];

/** Makes a cluster CA (its key never leaves `dir`), or takes the one already in `dir` (a data dir used again: nodes
 * trust it still), and a server certificate for `addresses` (IPs or DNS names) plus the loopback names, and writes
 * them to `dir`: keys 0600, certificates 0644. */
export function createClusterTls(dir: string, addresses: string[]): ClusterTls {
  const { ca, caCert } = savedCa(dir) ?? newCa();
  const server = newKeyPair();
  const serverCert = serverCertificate(ca, caCert, server.publicKey, [...addresses, hostname()]);
  const caPem = forge.pki.certificateToPem(caCert);
  writePrivateFile(join(dir, 'tls-ca-key.pem'), forge.pki.privateKeyToPem(ca.privateKey));
  writePrivateFile(join(dir, 'tls-server-key.pem'), forge.pki.privateKeyToPem(server.privateKey));
  return writeServerFiles(dir, forge.pki.certificateToPem(serverCert), join(dir, 'tls-server-key.pem'), caPem);
}

/** A nats-server certificate for `names` and the loopback names, good for both ends of a route (serverAuth and
 * clientAuth: routes verify each other's). */
function serverCertificate(
  ca: forge.pki.rsa.KeyPair,
  caCert: forge.pki.Certificate,
  publicKey: forge.pki.rsa.PublicKey,
  names: string[],
): forge.pki.Certificate {
  return certificate({
    subject: 'troupe nats-server',
    publicKey,
    signer: ca.privateKey,
    issuer: caCert,
    years: 2,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectAltName', altNames: [...new Set([...names, ...LOCAL_NAMES].filter(Boolean))].map(altName) },
      { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    ],
  });
}

/** On the head's machine: a certificate for another core server of the bus, for the public key it sent (SPKI PEM),
 * naming `host` and loopback only. Signed with the CA in `dir`; a UsageError where there is none (the user's own
 * certificates, whose CA key troupe does not hold). */
export function signPeerCertificate(dir: string, publicKeyPem: string, host: string): string {
  const saved = savedCa(dir);
  if (!saved) throw new UsageError('this cluster has no CA of its own to sign a bus server certificate with');
  let key: forge.pki.rsa.PublicKey;
  try {
    key = forge.pki.publicKeyFromPem(publicKeyPem) as forge.pki.rsa.PublicKey;
  } catch (e) {
    throw new ProtocolError(`not an RSA public key in PEM: ${(e as Error).message}`); // it came from the bus
  }
  return forge.pki.certificateToPem(serverCertificate(saved.ca, saved.caCert, key, [host]));
}

/** A new key pair for this machine's core server of the bus: the private key goes to `dir` (0600), the public key
 * (PEM) to the head, which signs it (signPeerCertificate). */
export function newPeerKey(dir: string): string {
  const pair = newKeyPair();
  writePrivateFile(join(dir, 'tls-server-key.pem'), forge.pki.privateKeyToPem(pair.privateKey));
  return forge.pki.publicKeyToPem(pair.publicKey);
}

/** The certificate an earlier start of this machine's core server got (in `dir`, with its key), if it is still the
 * CA's for `host` and good for another 30 days. */
export function keptPeerTls(dir: string, caPem: string, host: string): ClusterTls | undefined {
  try {
    const chain = readFileSync(join(dir, 'tls-server-chain.pem'), 'utf8');
    if (!existsSync(join(dir, 'tls-server-key.pem'))) return undefined;
    if (new Date(new X509Certificate(firstPem(chain)).validTo).getTime() < Date.now() + 30 * 24 * 3600_000)
      return undefined;
    return peerServerTls(dir, chain, caPem, host);
  } catch {
    return undefined;
  }
}

/** Writes the files this machine's core server serves with: the certificate the head signed, checked to be the CA's
 * (`caPem`, the CA this machine trusts by fingerprint) and to name `host`. A TlsTrustError otherwise. */
export function peerServerTls(dir: string, certPem: string, caPem: string, host: string): ClusterTls {
  const cert = new X509Certificate(certPem);
  const ca = new X509Certificate(caPem);
  if (!signedBy(cert, ca) || !(cert.checkIP(host) || cert.checkHost(host)))
    throw new TlsTrustError(`the head's answer holds a certificate that is not the cluster CA's for ${host}`);
  return writeServerFiles(dir, firstPem(certPem), join(dir, 'tls-server-key.pem'), firstPem(caPem));
}

/** The user's own certificate, key and CA (`--tls-cert/--tls-key/--tls-ca`), checked: the key is the certificate's
 * and the CA signed it. Writes the chain file nats-server serves to `dir`. */
export function userClusterTls(dir: string, files: { cert: string; key: string; ca: string }): ClusterTls {
  const read = (path: string, flag: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (e) {
      throw new UsageError(`${flag} ${path}: ${(e as Error).message}`);
    }
  };
  const certPem = read(files.cert, '--tls-cert');
  const caPem = read(files.ca, '--tls-ca');
  const keyPem = read(files.key, '--tls-key');
  const cert = parseCert(certPem, `--tls-cert ${files.cert}`);
  const ca = parseCert(caPem, `--tls-ca ${files.ca}`);
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(keyPem);
  } catch (e) {
    throw new UsageError(`--tls-key ${files.key} is not a PEM private key: ${(e as Error).message}`);
  }
  if (!cert.checkPrivateKey(key)) throw new UsageError(`--tls-key ${files.key} is not the key of ${files.cert}`);
  if (!ca.ca) throw new UsageError(`--tls-ca ${files.ca} is not a CA certificate`);
  if (!signedBy(cert, ca)) throw new UsageError(`--tls-cert ${files.cert} is not signed by --tls-ca ${files.ca}`);
  return writeServerFiles(dir, firstPem(certPem), files.key, firstPem(caPem));
}

function newCa(): { ca: forge.pki.rsa.KeyPair; caCert: forge.pki.Certificate } {
  const ca = newKeyPair();
  const caCert = certificate({
    subject: `troupe cluster CA ${randomBytes(4).toString('hex')}`,
    publicKey: ca.publicKey,
    signer: ca.privateKey,
    years: 10,
    extensions: [
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      { name: 'subjectKeyIdentifier' },
    ],
  });
  return { ca, caCert };
}

function savedCa(dir: string): { ca: forge.pki.rsa.KeyPair; caCert: forge.pki.Certificate } | undefined {
  const keyFile = join(dir, 'tls-ca-key.pem');
  const certFile = join(dir, 'tls-ca.pem');
  if (!existsSync(keyFile) || !existsSync(certFile)) return undefined;
  const privateKey = forge.pki.privateKeyFromPem(readFileSync(keyFile, 'utf8')) as forge.pki.rsa.PrivateKey;
  const caCert = forge.pki.certificateFromPem(readFileSync(certFile, 'utf8'));
  return { ca: { privateKey, publicKey: caCert.publicKey as forge.pki.rsa.PublicKey }, caCert };
}

function writeServerFiles(dir: string, serverPem: string, keyFile: string, caPem: string): ClusterTls {
  const chainFile = join(dir, 'tls-server-chain.pem');
  const caFile = join(dir, 'tls-ca.pem');
  writeFileSync(chainFile, serverPem + caPem, { mode: 0o644 });
  writeFileSync(caFile, caPem, { mode: 0o644 });
  return { chainFile, keyFile, caFile, caPem, caSha256: caSha256(caPem) };
}

/** The nats-server `tls {}` block for client connections. Routes and leaf nodes (a NATS cluster of several servers)
 * take the same block in their `cluster {}` / `leafnodes {}` sections, with `verify: true` so that both ends show a
 * certificate of this CA. */
export function natsTlsBlock(t: ClusterTls, o: { verifyPeers?: boolean } = {}): string {
  return [
    'tls {',
    `  cert_file: ${JSON.stringify(t.chainFile)}`,
    `  key_file: ${JSON.stringify(t.keyFile)}`,
    `  ca_file: ${JSON.stringify(t.caFile)}`,
    ...(o.verifyPeers ? ['  verify: true'] : []),
    '  timeout: 5',
    '}',
  ].join('\n');
}

/** `sha256:<hex>` of a certificate's DER (the first in a PEM). */
export function caSha256(pem: string): string {
  return `sha256:${createHash('sha256').update(parseCert(pem, 'certificate').raw).digest('hex')}`;
}

/** `sha256:<64 hex>` (or the bare hex), lower-cased; else a UsageError naming `flag`. */
export function checkCaSha256(value: string, flag = '--ca-sha256'): string {
  const m = /^(?:sha256:)?([0-9a-fA-F]{64})$/.exec(value.trim());
  if (!m)
    throw new UsageError(`${flag} must be sha256:<64 hex digits> (from the join line), got ${JSON.stringify(value)}`);
  return `sha256:${m[1].toLowerCase()}`;
}

/** Learns the cluster's CA from the server at `address`: reads its INFO, upgrades to TLS without verifying, and takes
 * from the chain it shows the certificate whose SHA-256 is `sha256`, if that is a CA that signed the server's
 * certificate. Nothing else is sent. Fails with TlsTrustError. */
export async function discoverCa(address: string, sha256: string, timeoutMs = 10_000): Promise<string> {
  const want = checkCaSha256(sha256);
  const port = Number(/:(\d+)$/.exec(parseAddress(address))![1]);
  const chain = await presentedChain(hostOf(address), port, timeoutMs, address);
  const ca = chain.find((c) => `sha256:${createHash('sha256').update(c.raw).digest('hex')}` === want);
  if (!ca)
    throw new TlsTrustError(
      `the cluster at ${address} shows no CA with fingerprint ${want}: check --ca-sha256 against the head's join ` +
        `line (or someone else answers at that address)`,
    );
  if (!ca.ca || !signedBy(chain[0], ca))
    throw new TlsTrustError(`the cluster at ${address}: the certificate ${want} did not sign its server certificate`);
  return ca.toString();
}

function presentedChain(host: string, port: number, timeoutMs: number, address: string): Promise<X509Certificate[]> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    let tlsSocket: ReturnType<typeof tlsConnect> | undefined;
    const fail = (why: string, cause?: unknown) => {
      clearTimeout(timer);
      socket.destroy();
      tlsSocket?.destroy();
      reject(new TlsTrustError(`cannot learn the CA of the cluster at ${address}: ${why}`, { cause }));
    };
    const timer = setTimeout(() => fail(`no TLS handshake within ${timeoutMs} ms`), timeoutMs);
    socket.on('error', (e) => fail(e.message, e));
    let info = '';
    const onData = (d: Buffer) => {
      info += d.toString('latin1');
      if (info.length > 64 * 1024) return fail('no INFO line from the server');
      const end = info.indexOf('\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      let parsed: { tls_required?: boolean; tls_available?: boolean };
      try {
        parsed = JSON.parse(info.slice(0, end).replace(/^INFO\s+/, ''));
      } catch {
        return fail('it does not speak NATS');
      }
      if (!parsed.tls_required && !parsed.tls_available)
        return fail('it does not use TLS (a cluster listening on loopback only, or started with --no-tls)');
      // Unverified on purpose: what is trusted is the fingerprint, checked against the chain below.
      tlsSocket = tlsConnect({ socket, rejectUnauthorized: false, servername: isIP(host) ? undefined : host });
      tlsSocket.on('error', (e) => fail(e.message, e));
      tlsSocket.once('secureConnect', () => {
        const chain: X509Certificate[] = [];
        let c = tlsSocket!.getPeerCertificate(true) as { raw?: Buffer; issuerCertificate?: unknown } | undefined;
        while (c?.raw && chain.length < 10) {
          const x = new X509Certificate(c.raw);
          if (chain.some((y) => y.fingerprint256 === x.fingerprint256)) break; // a self-signed CA is its own issuer
          chain.push(x);
          c = c.issuerCertificate as typeof c;
        }
        clearTimeout(timer);
        tlsSocket!.destroy();
        if (chain.length === 0) return fail('the server showed no certificate');
        resolve(chain);
      });
    };
    socket.on('data', onData);
  });
}

function signedBy(cert: X509Certificate, ca: X509Certificate): boolean {
  return cert.checkIssued(ca) && cert.verify(ca.publicKey);
}

function parseCert(pem: string, what: string): X509Certificate {
  try {
    return new X509Certificate(firstPem(pem));
  } catch (e) {
    throw new UsageError(`${what} is not a PEM certificate: ${(e as Error).message}`);
  }
}

function firstPem(pem: string): string {
  const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem);
  return m ? `${m[0]}\n` : pem;
}

/** An RSA 2048 key pair from node:crypto (forge signs with RSA, not EC), in forge's form. */
function newKeyPair(): { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
  });
  return {
    publicKey: forge.pki.publicKeyFromPem(publicKey),
    privateKey: forge.pki.privateKeyFromPem(privateKey),
  };
}

/** A fresh random serial, as hex, that forge DER-encodes as is: positive (first bit clear) and with no leading zero
 * byte, which OpenSSL refuses as illegal padding (a serial that began with 00 did that once in 256 certificates). */
export function certificateSerial(): string {
  const serial = randomBytes(16);
  serial[0] = (serial[0] & 0x7f) | 0x01;
  return serial.toString('hex');
}

function certificate(o: {
  subject: string;
  publicKey: forge.pki.rsa.PublicKey;
  signer: forge.pki.rsa.PrivateKey;
  issuer?: forge.pki.Certificate;
  years: number;
  extensions: object[];
}): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = o.publicKey;
  cert.serialNumber = certificateSerial();
  const now = new Date();
  cert.validity.notBefore = new Date(now.getTime() - 60 * 60_000); // clocks of the machines may differ a little
  cert.validity.notAfter = new Date(now.getTime() + o.years * 365 * 24 * 3600_000);
  const subject = [{ name: 'commonName', value: o.subject }];
  cert.setSubject(subject);
  cert.setIssuer(o.issuer ? o.issuer.subject.attributes : subject);
  cert.setExtensions(o.extensions);
  cert.sign(o.signer, forge.md.sha256.create());
  return cert;
}

function altName(name: string): { type: number; value?: string; ip?: string } {
  // type 7: iPAddress, 2: dNSName
  return isIP(name) ? { type: 7, ip: name } : { type: 2, value: name };
}
