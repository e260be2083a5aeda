#include "store/codec.h"

#include <capnp/serialize.h>
#include <openssl/evp.h>

#include <cstring>
#include <memory>
#include <stdexcept>

#include "schema/events.capnp.h"

namespace imaged::store {

std::array<uint8_t, 8> encodeU64(uint64_t v) {
  std::array<uint8_t, 8> out;
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<uint8_t>(v & 0xff);
    v >>= 8;
  }
  return out;
}

uint64_t decodeU64(const void* p) {
  const auto* b = static_cast<const uint8_t*>(p);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | b[i];
  return v;
}

std::string streamKey(std::string_view streamId, uint64_t version) {
  std::string key;
  key.reserve(streamId.size() + 9);
  key.append(streamId);
  key.push_back('\0');
  auto v = encodeU64(version);
  key.append(reinterpret_cast<const char*>(v.data()), v.size());
  return key;
}

namespace {

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

// One digest context per thread, reused: creating one per event costs more than hashing it.
EVP_MD_CTX* threadDigestContext() {
  thread_local std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx) throw std::bad_alloc();
  return ctx.get();
}

// SHA-256 fetched once: OpenSSL 3 otherwise looks the algorithm up (under a lock) every time.
const EVP_MD* sha256() {
  static const EVP_MD* md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched ? fetched : EVP_sha256();
  }();
  return md;
}

}  // namespace

Hash chainHash(const Hash& prev, kj::ArrayPtr<const uint8_t> message, size_t hashOffset) {
  static constexpr uint8_t kZeros[kHashSize] = {};
  const uint8_t* bytes = message.begin();
  const size_t size = message.size();
  if (hashOffset + kHashSize > size) throw std::logic_error("chainHash: hash offset out of range");

  EVP_MD_CTX* ctx = threadDigestContext();
  Hash out;
  unsigned int len = 0;
  if (EVP_DigestInit_ex(ctx, sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx, prev.data(), prev.size()) != 1 ||
      EVP_DigestUpdate(ctx, bytes, hashOffset) != 1 ||
      EVP_DigestUpdate(ctx, kZeros, kHashSize) != 1 ||
      EVP_DigestUpdate(ctx, bytes + hashOffset + kHashSize, size - hashOffset - kHashSize) != 1 ||
      EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != kHashSize) {
    throw std::runtime_error("SHA-256 failed in OpenSSL");
  }
  return out;
}

Result<size_t> locateHash(kj::ArrayPtr<const capnp::word> message,
                          const schema::Event::Reader& event) {
  try {
    auto hash = event.getHash();
    const auto* base = reinterpret_cast<const uint8_t*>(message.begin());
    const auto* end = reinterpret_cast<const uint8_t*>(message.end());
    if (hash.size() != kHashSize || hash.begin() < base || hash.end() > end) {
      return Error{"E_STORE_CORRUPT", "the event's hash field is not 32 bytes inside the record"};
    }
    return static_cast<size_t>(hash.begin() - base);
  } catch (const kj::Exception& e) {
    return Error{"E_STORE_CORRUPT",
                 std::string("the record does not decode: ") + e.getDescription().cStr()};
  }
}

Result<size_t> locateHash(kj::ArrayPtr<const capnp::word> message) {
  try {
    capnp::FlatArrayMessageReader reader(message);
    return locateHash(message, reader.getRoot<schema::Event>());
  } catch (const kj::Exception& e) {
    return Error{"E_STORE_CORRUPT",
                 std::string("the record does not decode: ") + e.getDescription().cStr()};
  }
}

std::string toHex(const Hash& h) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(h.size() * 2);
  for (uint8_t b : h) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 0xf]);
  }
  return s;
}

}  // namespace imaged::store
