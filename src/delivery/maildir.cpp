// Maildir delivery.  File names follow the maildir(5) "modern" form
// <seconds>.M<microseconds>P<pid>Q<queue id>.<host>: the queue ID makes the
// name unique even when one process delivers many messages per microsecond,
// and the microseconds keep a redelivery of the same queue ID (after a crash
// between the Maildir rename and the spool unlink) from colliding.
#include "delivery/maildir.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string_view>

#include "util/unique_fd.hpp"

namespace mxgate::delivery {
namespace {

namespace fs = std::filesystem;

int make_directory(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) return 0;
  if (errno != EEXIST) return errno;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return errno;
  return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

// maildir(5): '/' and ':' in the host name would break the name's syntax.
std::string host_part() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') return "localhost";
  std::string host;
  for (const char* p = buffer; *p != '\0'; ++p) {
    if (*p == '/') {
      host += "\\057";
    } else if (*p == ':') {
      host += "\\072";
    } else {
      host += *p;
    }
  }
  return host;
}

std::string unique_name(std::string_view queue_id) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  return std::to_string(micros / 1000000) + ".M" + std::to_string(micros % 1000000) + "P" +
         std::to_string(::getpid()) + "Q" + std::string(queue_id) + "." + host_part();
}

bool safe_header_value(std::string_view value) {
  return value.find_first_of("\r\n") == std::string_view::npos;
}

bool safe_queue_id(std::string_view id) {
  return !id.empty() && std::all_of(id.begin(), id.end(),
                                    [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'); });
}

// Writes content with every CRLF turned into LF (local mail files use LF),
// through a bounded buffer so a large message is not copied whole.  A CR
// not followed by LF is kept as it is.
int write_lf_content(int fd, std::string_view content) {
  std::string buffer;
  constexpr std::size_t kChunk = 65536;
  buffer.reserve(kChunk);
  for (std::size_t i = 0; i < content.size(); ++i) {
    if (content[i] == '\r' && i + 1 < content.size() && content[i + 1] == '\n') continue;
    buffer.push_back(content[i]);
    if (buffer.size() == kChunk) {
      if (int err = write_all(fd, buffer); err != 0) return err;
      buffer.clear();
    }
  }
  return write_all(fd, buffer);
}

}  // namespace

Result<Maildir> Maildir::open(const fs::path& dir) {
  for (const fs::path& d : {dir, dir / "tmp", dir / "new", dir / "cur"}) {
    if (int err = make_directory(d); err != 0) {
      return make_error("maildir: create directory " + d.string() + ": " + errno_text(err));
    }
  }
  return Maildir(dir);
}

Result<std::string> Maildir::deliver(const queue::SpooledMessage& message) const {
  const queue::Envelope& e = message.envelope;
  if (!safe_queue_id(e.id)) return make_error("maildir: invalid queue id");
  if (!safe_header_value(e.sender)) return make_error("maildir: sender contains CR or LF");
  std::string header = "Return-Path: <" + e.sender + ">\n";
  for (const auto& rcpt : e.recipients) {
    if (!safe_header_value(rcpt)) return make_error("maildir: recipient contains CR or LF");
    header += "Delivered-To: " + rcpt + "\n";
  }

  std::string name = unique_name(e.id);
  auto written = write_durably(dir_ / "tmp" / name, dir_ / "new" / name, [&](int fd) {
    if (int err = write_all(fd, header); err != 0) return err;
    return write_lf_content(fd, message.content);
  });
  if (!written) return make_error("maildir: " + written.error());
  return name;
}

}  // namespace mxgate::delivery
