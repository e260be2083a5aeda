// "sha256:<hex>" of some bytes, as OCI digests and the catalog's digest are written. Users link
// OpenSSL::Crypto.
#pragma once

#include <openssl/evp.h>

#include <string>
#include <string_view>

namespace imaged {

inline std::string sha256Digest(std::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

}  // namespace imaged
