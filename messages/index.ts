/**
 * The Strata wire protocol: message types and limits, validators, the CBOR codec, error codes,
 * headers and subjects. This is the public surface; the building blocks of the validators
 * (`expectInteger`, …) are in ./validate for other message modules.
 */
export {
  ERROR_CODES,
  ERROR_CODE_RETRYABLE,
  ERROR_MESSAGE_LENGTH_MAX,
  ProtocolError,
  errorReply,
  isErrorCode,
  isErrorReply,
  isProtocolError,
  isRetryable,
  throwIfError,
  toProtocolError,
} from './errors';
export type { ErrorBody, ErrorCode, ErrorDetails, ErrorReply } from './errors';

export { MESSAGE_BYTES_MAX, decode, encode } from './codec';
export type { CodecOptions } from './codec';

export {
  API_VERBS,
  ENVELOPE_BYTES_RESERVE,
  ID_LENGTH_MAX,
  LSN_MAX,
  MESSAGE_TYPES,
  NAME_LENGTH_MAX,
  PAGES_PER_REQUEST_MAX,
  PAGE_COUNT_MAX,
  PAGE_SIZES_BYTES,
  PAGE_SIZE_BYTES_DEFAULT,
  REPLICAS_DEFAULT,
  REPLICA_COUNTS,
  REQUEST_DATA_BYTES_MAX,
  SHARDS_DEFAULT,
  SHARDS_MAX,
  SHARD_VERBS,
  STRIPE_PAGES_DEFAULT,
  STRIPE_PAGES_MAX,
  VOLUMES_PER_LIST_MAX,
  isApiVerb,
  isMessageType,
  shardOfPage,
} from './api';
export type * from './api';

export {
  REPLY_VALIDATORS,
  REQUEST_VALIDATORS,
  checkReadReplyBytes,
  validatePageRead,
  validatePageReadReply,
  validatePageReadRequest,
  validatePageWrite,
  validatePageWriteReply,
  validatePageWriteRequest,
  validateReply,
  validateRequest,
  validateShardFlushReply,
  validateShardFlushRequest,
  validateShardRead,
  validateShardReadReply,
  validateShardReadRequest,
  validateShardWrite,
  validateShardWriteReply,
  validateShardWriteRequest,
  validateStatusReply,
  validateStatusRequest,
  validateVolumeBranchRequest,
  validateVolumeCreateRequest,
  validateVolumeDeleteReply,
  validateVolumeDeleteRequest,
  validateVolumeFlushReply,
  validateVolumeFlushRequest,
  validateVolumeInfo,
  validateVolumeInfoRequest,
  validateVolumeListReply,
  validateVolumeListRequest,
} from './validate';
export type { PageReadExpectation, ShardLayout, Validator } from './validate';

export {
  DEADLINE_AHEAD_MS_MAX,
  HEADER_DEADLINE,
  HEADER_SCHEMA,
  HEADER_TRACEPARENT,
  HEADER_TYPE,
  HEADER_VALUE_LENGTH_MAX,
  SCHEMA_VERSION,
  SCHEMA_VERSIONS_SUPPORTED,
  checkSchemaHeader,
  deadlineRemainingMs,
  parseDeadline,
  parseSchemaVersion,
  parseTraceparent,
  readHeaders,
  writeHeaders,
} from './headers';
export type { HeaderCarrier, HeaderReader, HeaderWriter, MessageHeaders, MessageHeadersInit, ReadHeadersOptions } from './headers';

export {
  ACTOR_ID_TOKENS_MAX,
  SUBJECT_ROOT,
  actorSubject,
  apiSubject,
  apiWildcard,
  parseShardSubject,
  parseSubject,
  shardSubject,
} from './subjects';
export type { ActorAddress, ParsedSubject, ShardAddress } from './subjects';
