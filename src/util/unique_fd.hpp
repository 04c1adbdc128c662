// UniqueFd: sole owner of one POSIX file descriptor, closed on destruction,
// plus the few blocking file operations built on it that the spool and the
// Maildir share: write everything, fsync a directory, and the
// write-tmp/fsync/rename/fsync-dir sequence that makes a file durable.
// Durable writers call close() explicitly because close(2) may be the first
// to report a write error (EIO, EDQUOT on network file systems), which a
// destructor would swallow.
#pragma once

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "util/result.hpp"

namespace mxgate {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }

  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }

  bool valid() const { return fd_ >= 0; }
  int get() const { return fd_; }

  int release() { return std::exchange(fd_, -1); }

  // Closes the current descriptor (ignoring its close error) and owns fd.
  void reset(int fd = -1) {
    const int old = std::exchange(fd_, fd);
    if (old >= 0) ::close(old);
  }

  // Closes now; returns 0 or the errno of close(2).  EINTR is not retried:
  // on Linux the descriptor is released even then, and a retry could close
  // a descriptor another thread has just been given.
  int close() {
    const int old = release();
    if (old < 0 || ::close(old) == 0) return 0;
    return errno;
  }

 private:
  int fd_ = -1;
};

// strerror(3) text for err; strerror_r's GNU variant is thread-safe, unlike strerror.
inline std::string errno_text(int err) {
  char buffer[256];
  return ::strerror_r(err, buffer, sizeof buffer);
}

// Writes all of data, resuming after partial writes and EINTR.  Returns 0 or errno.
inline int write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return 0;
}

// Appends everything fd holds to out, resuming after EINTR.  Returns 0 or errno.
inline int read_all(int fd, std::string& out) {
  // Straight into out's spare capacity, no bounce buffer: callers that know
  // the size reserve it, and a large spool file is then read with no copy
  // in user space.  A 4 KiB probe finds EOF without doubling a buffer that
  // is exactly full.
  char probe[4096];
  for (;;) {
    const std::size_t used = out.size();
    const std::size_t spare = out.capacity() - used;
    ssize_t n;
    if (spare < sizeof probe) {
      n = ::read(fd, probe, sizeof probe);
      if (n > 0) out.append(probe, static_cast<std::size_t>(n));
    } else {
      out.resize(out.capacity());
      n = ::read(fd, out.data() + used, spare);
      const int saved = errno;
      out.resize(used + static_cast<std::size_t>(n > 0 ? n : 0));
      errno = saved;
    }
    if (n == 0) return 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
  }
}

// The whole file at path: 0 or errno (ENOENT when it does not exist).
inline int read_file(const std::filesystem::path& path, std::string& out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return errno;
  return read_all(fd.get(), out);
}

// fsync(2) of a directory makes a rename or unlink in it durable.  Returns 0 or errno.
inline int fsync_directory(const std::filesystem::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  if (::fsync(fd.get()) != 0) return errno;
  return fd.close();
}

// Creates tmp exclusively (mode 0600), calls fill(fd) to write the content
// (fill returns 0 or an errno), fsyncs and closes the file, renames it to
// dest without replacing an existing file, and fsyncs dest's directory so
// the rename survives a crash.  On any failure nothing is left at tmp or
// dest; the error reads "STEP PATH: strerror".
template <class Fill>
Result<void> write_durably(const std::filesystem::path& tmp, const std::filesystem::path& dest, Fill&& fill) {
  auto failure = [](std::string_view step, const std::filesystem::path& path, int err) {
    return make_error(std::string(step) + " " + path.string() + ": " + errno_text(err));
  };
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  // Not ours to unlink when O_EXCL refused it: it may be another writer's file.
  if (!fd.valid()) return failure("create", tmp, errno);

  int err = fill(fd.get());
  const char* step = "write";
  if (err == 0) {
    step = "fsync";
    if (::fsync(fd.get()) != 0) err = errno;
  }
  if (err == 0) {
    step = "close";
    err = fd.close();
  }
  if (err == 0) {
    step = "rename to";
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
      err = errno;
      // File systems without RENAME_NOREPLACE: fall back to a plain rename;
      // the names are unique by construction, the flag is only a safety net.
      if (err == EINVAL || err == ENOSYS) err = ::rename(tmp.c_str(), dest.c_str()) == 0 ? 0 : errno;
    }
  }
  if (err != 0) {
    fd.reset();
    ::unlink(tmp.c_str());
    return failure(step, std::string_view(step) == "rename to" ? dest : tmp, err);
  }
  if (err = fsync_directory(dest.parent_path()); err != 0) {
    // Not durable, so not done: the caller reports failure and must not find
    // a copy it did not acknowledge.
    ::unlink(dest.c_str());
    return failure("fsync", dest.parent_path(), err);
  }
  return {};
}

}  // namespace mxgate
