/**
 * An S3-compatible server on loopback for the tests: s3rver (npm), which speaks the
 * S3 REST protocol (SigV4, multipart, ranges, ListObjectsV2) over a folder. Run as
 * its own process, so that workers in other processes reach it as they would a real one:
 *
 *   node --import tsx tests/support/s3-server.ts DIR BUCKET ACCESS_KEY SECRET
 *
 * prints `{"port": N}` once it listens, and serves until killed. The credentials are
 * registered with the server, which checks every request's signature against them.
 */
import S3rver from "s3rver"
// @ts-expect-error: s3rver's account registry has no types
import AWSAccount from "s3rver/lib/models/account.js"

const [dir, bucket, accessKey, secret] = process.argv.slice(2)
if (dir === undefined || bucket === undefined || accessKey === undefined || secret === undefined) {
  process.stderr.write("usage: s3-server.ts DIR BUCKET ACCESS_KEY SECRET\n")
  process.exit(2)
}
const account = new AWSAccount("123456789000", "canary")
account.createKeyPair(accessKey, secret)
AWSAccount.DUMMY_ACCOUNT.revokeAccessKey("S3RVER")
const server = new S3rver({ port: 0, address: "127.0.0.1", directory: dir, silent: true, configureBuckets: [{ name: bucket, configs: [] }] })
const info = (await server.run()) as { port: number }
process.stdout.write(`${JSON.stringify({ port: info.port })}\n`)
process.on("SIGTERM", () => void server.close().then(() => process.exit(0)))
