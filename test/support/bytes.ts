/** A copy of `bytes` changed by `edit` (through a DataView over the copy, and the copy itself): a malformed payload made from a good one. */
export function edited(bytes: Uint8Array, edit: (dv: DataView, b: Uint8Array) => void): Uint8Array {
  const b = bytes.slice();
  edit(new DataView(b.buffer, b.byteOffset, b.byteLength), b);
  return b;
}
