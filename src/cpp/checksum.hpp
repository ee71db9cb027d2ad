// A fast non-cryptographic 64-bit checksum for detecting corrupted automaton files.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sam {

// Hash of `size` bytes; reads 32 bytes per round so that verifying a multi-GB file runs at
// memory bandwidth rather than byte by byte.
std::uint64_t checksum64(const void* data, std::size_t size, std::uint64_t seed = 0);

}  // namespace sam
