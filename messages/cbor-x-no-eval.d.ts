/**
 * cbor-x's build without its optional native string extractor, exported by the package as
 * `cbor-x/index-no-eval` with the types of `cbor-x` (messages/codec.ts says why it is used).
 */
declare module 'cbor-x/index-no-eval' {
  export * from 'cbor-x';
}
