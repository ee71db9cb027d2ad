// Basic vocabulary of the core: token and state ids, limits, and the error types that the
// Python bindings map to ValueError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace sam {

using Token = std::uint32_t;
using StateId = std::uint32_t;

// Token ids are non-negative int32 values, so the top of the uint32 range is free for markers.
constexpr Token kMaxToken = 0x7FFFFFFFu;
// Stored between documents in a corpus text; never a valid token, so no match can span it.
constexpr Token kSeparator = 0xFFFFFFFFu;
constexpr StateId kNoState = 0xFFFFFFFFu;

// Tokens stored in 4 bytes, or in 2 (file format 2, when every token id is below kNarrowSeparator),
// where kNarrowSeparator stands for kSeparator.
constexpr std::uint16_t kNarrowSeparator = 0xFFFF;
class TokenArrayView {
 public:
  TokenArrayView() = default;
  static TokenArrayView wide(const Token* tokens) { return TokenArrayView(tokens, nullptr); }
  static TokenArrayView narrow(const std::uint16_t* tokens) { return TokenArrayView(nullptr, tokens); }
  Token operator[](std::size_t index) const {
    if (narrow_ == nullptr) return wide_[index];
    const std::uint16_t token = narrow_[index];
    return token == kNarrowSeparator ? kSeparator : token;
  }

 private:
  TokenArrayView(const Token* wide, const std::uint16_t* narrow) : wide_(wide), narrow_(narrow) {}
  const Token* wide_ = nullptr;
  const std::uint16_t* narrow_ = nullptr;
};

// A file that is truncated, corrupted, foreign or of an unknown format version.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Input the caller should not have passed (bad ids, sizes beyond the format's limits).
class InputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace sam
