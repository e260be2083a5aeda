// Conversions between Cap'n Proto lists and plain vectors, shared by every edge that speaks the
// schemas (the projection, the RPC server, the client). `Env` is any struct with `key` and
// `value` strings.
#pragma once

#include <string>
#include <vector>

namespace imaged::schema_lists {

template <typename List>
std::vector<std::string> texts(List list) {
  std::vector<std::string> out;
  out.reserve(list.size());
  for (auto t : list) out.emplace_back(t);
  return out;
}

template <typename Env, typename List>
std::vector<Env> envOf(List list) {
  std::vector<Env> out;
  out.reserve(list.size());
  for (auto e : list) out.push_back({e.getKey(), e.getValue()});
  return out;
}

template <typename ListBuilder, typename Container>
void setTexts(ListBuilder list, const Container& texts) {
  size_t i = 0;
  for (const auto& t : texts) list.set(i++, t);
}

template <typename ListBuilder, typename Env>
void setEnv(ListBuilder list, const std::vector<Env>& env) {
  for (size_t i = 0; i < env.size(); ++i) {
    list[i].setKey(env[i].key);
    list[i].setValue(env[i].value);
  }
}

}  // namespace imaged::schema_lists
