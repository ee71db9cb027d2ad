#include "checksum.hpp"

#include <cstring>

namespace sam {
namespace {

constexpr std::uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr std::uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;
constexpr std::uint64_t kPrime3 = 0x165667B19E3779F9ull;

inline std::uint64_t rotate_left(std::uint64_t value, int bits) {
  return (value << bits) | (value >> (64 - bits));
}

inline std::uint64_t mix_lane(std::uint64_t lane, std::uint64_t word) {
  lane += word * kPrime2;
  lane = rotate_left(lane, 31);
  return lane * kPrime1;
}

inline std::uint64_t read_word(const unsigned char* bytes) {
  std::uint64_t word;
  std::memcpy(&word, bytes, sizeof(word));  // unaligned-safe; files are little-endian only
  return word;
}

}  // namespace

std::uint64_t checksum64(const void* data, std::size_t size, std::uint64_t seed) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::uint64_t lanes[4] = {seed + kPrime1 + kPrime2, seed + kPrime2, seed, seed - kPrime1};
  std::size_t offset = 0;
  for (; offset + 32 <= size; offset += 32) {
    for (int lane = 0; lane < 4; ++lane) {
      lanes[lane] = mix_lane(lanes[lane], read_word(bytes + offset + 8 * lane));
    }
  }
  std::uint64_t hash = rotate_left(lanes[0], 1) + rotate_left(lanes[1], 7) +
                       rotate_left(lanes[2], 12) + rotate_left(lanes[3], 18);
  hash ^= static_cast<std::uint64_t>(size) * kPrime3;
  for (; offset + 8 <= size; offset += 8) {
    hash = rotate_left(hash ^ mix_lane(0, read_word(bytes + offset)), 27) * kPrime1 + kPrime3;
  }
  for (; offset < size; ++offset) {
    hash = rotate_left(hash ^ (bytes[offset] * kPrime3), 11) * kPrime1;
  }
  hash ^= hash >> 33;
  hash *= kPrime2;
  hash ^= hash >> 29;
  hash *= kPrime3;
  hash ^= hash >> 32;
  return hash;
}

}  // namespace sam
