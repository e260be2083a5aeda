// The byte-level encoding of the log: keys of the LMDB databases, and the hash chain over
// stored Event messages. See docs/storage.md for the layout these functions implement.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <capnp/common.h>
#include <kj/array.h>

#include "common/result.h"
#include "schema/events.capnp.h"

namespace imaged::store {

inline constexpr size_t kHashSize = 32;
using Hash = std::array<uint8_t, kHashSize>;

// Big-endian u64, so that LMDB's byte order is numeric order.
std::array<uint8_t, 8> encodeU64(uint64_t v);
uint64_t decodeU64(const void* p);

// Key of the `streams` database: stream id bytes, one NUL, big-endian version.
std::string streamKey(std::string_view streamId, uint64_t version);

// SHA-256 over `prev` followed by `message` in which the 32 bytes at `hashOffset` are read as
// zeros. This is the chain rule: an event's hash covers every byte of it but its own hash.
Hash chainHash(const Hash& prev, kj::ArrayPtr<const uint8_t> message, size_t hashOffset);
inline Hash chainHash(const Hash& prev, kj::ArrayPtr<const capnp::word> message,
                      size_t hashOffset) {
  return chainHash(prev, message.asBytes(), hashOffset);
}

// Where, in bytes from the start of `message` (a flat Cap'n Proto message whose root is an
// Event), the 32-byte `hash` field lies. Fails when the message does not decode or its hash
// field is not 32 bytes inside the message. `message` must be word-aligned.
Result<size_t> locateHash(kj::ArrayPtr<const capnp::word> message);
// The same, for an event already decoded from `message` (one decode instead of two).
Result<size_t> locateHash(kj::ArrayPtr<const capnp::word> message,
                          const schema::Event::Reader& event);

// Hex of a hash, lowercase.
std::string toHex(const Hash& h);

}  // namespace imaged::store
