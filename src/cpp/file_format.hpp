// The automaton file format (little-endian): a checksummed 512-byte header (magic, version,
// byte-order tag, sizes, section table) and 64-byte-aligned sections holding the frozen arrays
// exactly as queries read them. Version 2 adds one header field after the section table,
// token_bytes: 2 when every token id is below 0xFFFF (text and edge tokens stored in 16 bits, the
// separator as 0xFFFF), else 4; version 1 (token_bytes 0 there, meaning 4) still loads. Writing lays frozen arrays out as an image; reading checks
// a (possibly hostile) image's header and section table in O(1) and says where each array lies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "automaton_storage.hpp"
#include "frozen_arrays.hpp"
#include "token_types.hpp"

namespace sam {

constexpr std::uint32_t kFormatVersion = 2;
constexpr std::uint32_t kOldestFormatVersion = 1;
// Longest text (tokens plus one separator per document) the format can index: positions and
// state ids are 32-bit, and ids 2^32-1 (kNoState) and text_length+1 must stay representable.
constexpr std::uint64_t kMaxTextLength = 0xFFFFFFFDull;

// What the header records besides the arrays.
struct ImageSummary {
  std::uint64_t num_tokens = 0;     // separators excluded
  std::uint64_t num_documents = 0;  // non-empty ones
  std::uint32_t vocab_bound = 0;    // largest token id + 1
  std::string tokenizer_fingerprint;
  std::string metadata;
};

// Lays `arrays` out as a file image of the current version (freeing each array once copied) with
// its checksums; tokens in 16 bits if summary.vocab_bound <= kNarrowSeparator.
std::shared_ptr<HeapStorage> write_image(FrozenArrays&& arrays, const ImageSummary& summary);

// A checked image: its sizes, and where each array starts inside it.
struct ImageView {
  std::uint64_t num_tokens = 0, num_documents = 0, text_length = 0;
  std::uint64_t num_states = 0, num_clones = 0, num_edges = 0;
  std::uint32_t vocab_bound = 0, num_count_overflows = 0;
  std::uint32_t format_version = 0;
  std::string fingerprint, metadata;
  TokenArrayView text;
  const StateId* link = nullptr;
  const std::uint16_t* count = nullptr;
  const std::uint32_t* count_overflow = nullptr;
  const std::uint32_t* clone_length = nullptr;
  const std::uint32_t* clone_end = nullptr;
  const std::uint32_t* edge_offset = nullptr;
  TokenArrayView edge_token;
  const StateId* edge_target = nullptr;
};

// Checks the header (magic, version, checksum, every size field bounded and every product
// overflow-checked) and the section table against `size`; if `verify_payload`, also the checksum
// of every byte. Throws FormatError naming the problem. O(1) without `verify_payload`.
ImageView read_image(const std::uint8_t* bytes, std::size_t size, bool verify_payload);

// Whether the payload checksum recorded in a checked image's header matches its bytes.
bool payload_checksum_matches(const std::uint8_t* bytes, std::size_t size);

}  // namespace sam
