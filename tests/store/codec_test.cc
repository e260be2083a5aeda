#include "store/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstring>
#include <vector>

#include "schema/events.capnp.h"

namespace imaged::store {
namespace {

kj::Array<capnp::word> eventWithHash(uint8_t fill) {
  capnp::MallocMessageBuilder b;
  auto ev = b.initRoot<schema::Event>();
  ev.setSequence(7);
  ev.setStreamId("image/acme/web/1");
  auto h = ev.initHash(kHashSize);
  std::memset(h.begin(), fill, kHashSize);
  return capnp::messageToFlatArray(b);
}

Hash referenceSha(const std::vector<uint8_t>& bytes) {
  Hash out;
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

TEST(Codec, U64KeysSortNumerically) {
  auto a = encodeU64(255), b = encodeU64(256), c = encodeU64(UINT64_MAX);
  EXPECT_LT(std::memcmp(a.data(), b.data(), 8), 0);
  EXPECT_LT(std::memcmp(b.data(), c.data(), 8), 0);
  EXPECT_EQ(decodeU64(b.data()), 256u);
  EXPECT_EQ(decodeU64(c.data()), UINT64_MAX);
}

TEST(Codec, StreamKeysOfOneStreamSortByVersionAndNeverInterleaveWithAPrefixStream) {
  // "a" and "a-b": the NUL separator keeps all of "a" before "a-b".
  EXPECT_LT(streamKey("a", 2), streamKey("a", 10));
  EXPECT_LT(streamKey("a", UINT64_MAX), streamKey("a-b", 0));
  EXPECT_EQ(streamKey("s", 1).size(), 1u + 1u + 8u);
}

TEST(Codec, LocateHashFindsTheHashFieldBytes) {
  auto words = eventWithHash(0xAB);
  auto offset = locateHash(words);
  ASSERT_TRUE(offset.ok());
  const auto* bytes = reinterpret_cast<const uint8_t*>(words.begin());
  for (size_t i = 0; i < kHashSize; ++i) EXPECT_EQ(bytes[*offset + i], 0xAB);
}

TEST(Codec, ChainHashIsShaOfPrevAndBytesWithHashZeroed) {
  auto words = eventWithHash(0x5C);
  auto offset = locateHash(words);
  ASSERT_TRUE(offset.ok());
  Hash prev;
  for (size_t i = 0; i < kHashSize; ++i) prev[i] = static_cast<uint8_t>(i);

  std::vector<uint8_t> concat(prev.begin(), prev.end());
  const auto* bytes = reinterpret_cast<const uint8_t*>(words.begin());
  concat.insert(concat.end(), bytes, bytes + words.size() * sizeof(capnp::word));
  std::memset(concat.data() + kHashSize + *offset, 0, kHashSize);

  EXPECT_EQ(chainHash(prev, words, *offset), referenceSha(concat));
}

TEST(Codec, ChainHashIgnoresTheHashFieldButNotOtherBytesOrPrev) {
  auto a = eventWithHash(0x00), b = eventWithHash(0xFF);
  auto offset = locateHash(a);
  ASSERT_TRUE(offset.ok());
  Hash prev{};
  EXPECT_EQ(chainHash(prev, a, *offset), chainHash(prev, b, *offset));

  Hash otherPrev{};
  otherPrev[31] = 1;
  EXPECT_NE(chainHash(prev, a, *offset), chainHash(otherPrev, a, *offset));

  reinterpret_cast<uint8_t*>(a.begin())[8] ^= 1;  // first data byte: the sequence
  EXPECT_NE(chainHash(prev, a, *offset), chainHash(prev, b, *offset));
}

TEST(Codec, LocateHashRejectsGarbage) {
  auto words = kj::heapArray<capnp::word>(4);
  std::memset(static_cast<void*>(words.begin()), 0xFF, 4 * sizeof(capnp::word));
  auto offset = locateHash(words);
  ASSERT_FALSE(offset.ok());
  EXPECT_EQ(offset.error().code, "E_STORE_CORRUPT");
}

TEST(Codec, HexIsLowercase) {
  Hash h{};
  h[0] = 0xAB;
  h[31] = 0x01;
  EXPECT_EQ(toHex(h), "ab" + std::string(60, '0') + "01");
}

}  // namespace
}  // namespace imaged::store
