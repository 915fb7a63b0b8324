// The digest a verification compares (DIGEST READs, docs/protocol.md): SHA-256, computed by
// WebCrypto on a helper thread so a chunk's hashing does not hold up the requests on either node.
export async function chunkDigest(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}
