// Errors as values: an expected failure (a version conflict, a full disk, a rejected env var)
// is returned as an `Error` with a stable code, never thrown. Exceptions are for bugs.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace imaged {

// A failure a caller is expected to handle. `code` is stable (E_UPPER_SNAKE, see PRODUCT.md);
// `message` is for people and may change.
struct Error {
  std::string code;
  std::string message;

  bool operator==(const Error&) const = default;
};

// Either a value or an Error. Check `ok()` before `value()`; `value()` on an error is a bug.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

// Result of an operation with no value.
struct Ok {
  bool operator==(const Ok&) const = default;
};
using Status = Result<Ok>;

}  // namespace imaged
