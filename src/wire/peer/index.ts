// Public surface of the peer protocol codec (docs/protocol.md).
export {
  BITMAP_CHUNK_BYTES,
  CACHE_EPOCH_BYTES,
  DIGEST_BYTES,
  HEADER_BYTES,
  MAX_CONTROL_PAYLOAD_BYTES,
  MAX_DATA_PAYLOAD_BYTES,
  MAX_BITMAP_BYTES,
  MAX_DATA_BYTES,
  MAX_ERROR_MESSAGE_BYTES,
  MAX_NAME_BYTES,
  NONCE_BYTES,
  PROTOCOL_VERSION_MAX,
  PROTOCOL_VERSION_MIN,
  VERSION_CACHE_EPOCH,
  VERSION_DIGEST,
  VERSION_IN_SYNC,
  type PeerErrorName,
  type ReplyErrorName,
} from "./constants.ts";
export type * from "./types.ts";
export { FrameDecoder, type DecoderOptions } from "./decoder.ts";
export { FrameEncoder, frameBytes } from "./frame.ts";
export { negotiateVersion, expectedBitmapBytes } from "./handshake.ts";
export {
  authReplyBlock,
  challengeAuthBlock,
  checkAuthReply,
  checkChallengeAuth,
  constantTimeEqual,
  type AuthCheck,
  type AuthContext,
} from "./auth.ts";
export { bitmapFrames, BitmapAssembler, type BitmapProgress } from "./bitmap.ts";
export { replyErrorFromSystemCode } from "./errors.ts";
export { requestRangeProblem, type RequestRange } from "./validate.ts";
