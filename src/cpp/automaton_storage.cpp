#include "automaton_storage.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cerrno>
#include <cstring>
#include <new>

#include "token_types.hpp"

namespace sam {
namespace {

[[noreturn]] void throw_errno(const char* action, const std::string& path) {
  throw FormatError(std::string(action) + " " + path + ": " + std::strerror(errno));
}

}  // namespace

void release_free_heap_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

HeapStorage::HeapStorage(std::size_t size)
    : bytes_(static_cast<std::uint8_t*>(std::calloc(size == 0 ? 1 : size, 1))), size_(size) {
  if (!bytes_) throw std::bad_alloc();
}

MappedFile::MappedFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno("cannot open", path);
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    ::close(fd);
    throw_errno("cannot stat", path);
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    throw FormatError("not a regular file: " + path);
  }
  size_ = static_cast<std::size_t>(info.st_size);
  if (size_ > 0) {
    void* mapped = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (mapped == MAP_FAILED) {
      ::close(fd);
      throw_errno("cannot memory-map", path);
    }
    data_ = static_cast<const std::uint8_t*>(mapped);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

}  // namespace sam
