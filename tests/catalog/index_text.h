// Helpers over APKINDEX text for the catalog tests.
#pragma once

#include <string>
#include <vector>

namespace imaged::catalog::testing {

// The same records in the opposite order: what must not change a digest or a resolution.
inline std::string reversedRecords(const std::string& index) {
  std::vector<std::string> records;
  for (size_t pos = 0; pos < index.size();) {
    size_t end = index.find("\n\n", pos);
    if (end == std::string::npos) end = index.size();
    records.push_back(index.substr(pos, end - pos));
    pos = end + 2;
  }
  std::string reversed;
  for (auto it = records.rbegin(); it != records.rend(); ++it) reversed += *it + "\n\n";
  return reversed;
}

}  // namespace imaged::catalog::testing
