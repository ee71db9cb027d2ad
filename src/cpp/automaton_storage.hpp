// Where an automaton's bytes live: a heap buffer (just built) or a read-only memory map of a file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace sam {

// Returns the heap's free pages to the system (glibc: malloc_trim; elsewhere nothing). glibc keeps
// freed blocks of up to 32 MB in the heap once it has freed a larger mapped one, so a build that frees
// its arrays one by one while it fills the image would otherwise hold both.
void release_free_heap_memory();

// Bytes of a file or an in-memory image; either a heap buffer or a read-only memory map.
class Storage {
 public:
  virtual ~Storage() = default;
  virtual const std::uint8_t* data() const = 0;
  virtual std::size_t size() const = 0;
};

// An image built in memory, zero-filled, written in place by the builder. Allocated with calloc,
// whose large blocks are fresh zero pages that take no memory until written: the frozen arrays
// are copied in one at a time and freed, so the image and the arrays overlap only by one array.
class HeapStorage final : public Storage {
 public:
  explicit HeapStorage(std::size_t size);
  const std::uint8_t* data() const override { return bytes_.get(); }
  std::uint8_t* mutable_data() { return bytes_.get(); }
  std::size_t size() const override { return size_; }

 private:
  struct Free {
    void operator()(std::uint8_t* bytes) const { std::free(bytes); }
  };
  std::unique_ptr<std::uint8_t, Free> bytes_;
  std::size_t size_;
};

// A file mapped read-only (MAP_SHARED): loading costs no copy and no reading beyond the pages
// that queries touch. Throws FormatError if it cannot be opened, is not a regular file, or
// cannot be mapped.
class MappedFile final : public Storage {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile() override;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const std::uint8_t* data() const override { return data_; }
  std::size_t size() const override { return size_; }

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace sam
