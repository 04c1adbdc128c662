// Archives and little-endian fields built at test time (libarchive's
// writer), for the file-type and attachment-policy tests: nothing binary is
// committed.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mxgate::test_support {

enum class ArchiveFormat { zip, seven_zip, tar, tar_gz, gzip_raw, iso };

struct ArchiveEntry {
  std::string name;
  std::string data;
};

// For tests that drive libarchive's writer themselves.
struct ArchiveWriteFree {
  void operator()(archive* a) const noexcept { archive_write_free(a); }
};
inline la_ssize_t append_to_string(archive*, void* out, const void* buffer, std::size_t length) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buffer), length);
  return static_cast<la_ssize_t>(length);
}

// The archive's bytes.  options/passphrase: e.g. "zip:encryption=zipcrypt"
// and "infected" for an encrypted zip.
inline std::string make_archive(ArchiveFormat format, const std::vector<ArchiveEntry>& entries,
                                const char* options = nullptr, const char* passphrase = nullptr) {
  std::string out;
  std::unique_ptr<archive, ArchiveWriteFree> writer(archive_write_new());
  archive* a = writer.get();
  switch (format) {
    case ArchiveFormat::zip:
      archive_write_set_format_zip(a);
      break;
    case ArchiveFormat::seven_zip:
      archive_write_set_format_7zip(a);
      break;
    case ArchiveFormat::tar:
      archive_write_set_format_pax_restricted(a);
      break;
    case ArchiveFormat::tar_gz:
      archive_write_set_format_pax_restricted(a);
      archive_write_add_filter_gzip(a);
      break;
    case ArchiveFormat::gzip_raw:
      archive_write_set_format_raw(a);
      archive_write_add_filter_gzip(a);
      break;
    case ArchiveFormat::iso:
      archive_write_set_format_iso9660(a);
      break;
  }
  if (options) {
    EXPECT_EQ(archive_write_set_options(a, options), ARCHIVE_OK) << archive_error_string(a);
  }
  if (passphrase) {
    EXPECT_EQ(archive_write_set_passphrase(a, passphrase), ARCHIVE_OK);
  }
  archive_write_set_bytes_in_last_block(a, 1);
  EXPECT_EQ(archive_write_open2(a, &out, nullptr, append_to_string, nullptr, nullptr), ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname_utf8(entry, e.name.c_str());
    archive_entry_set_size(entry, static_cast<la_int64_t>(e.data.size()));
    archive_entry_set_filetype(entry, AE_IFREG);
    archive_entry_set_perm(entry, 0644);
    EXPECT_EQ(archive_write_header(a, entry), ARCHIVE_OK) << archive_error_string(a);
    EXPECT_EQ(archive_write_data(a, e.data.data(), e.data.size()), static_cast<la_ssize_t>(e.data.size()));
    archive_entry_free(entry);
  }
  EXPECT_EQ(archive_write_close(a), ARCHIVE_OK);
  return out;
}

// Little-endian fields written into b at byte offset at.
inline void put16(std::string& b, std::size_t at, std::uint16_t v) {
  b[at] = static_cast<char>(v & 0xFF);
  b[at + 1] = static_cast<char>(v >> 8);
}
inline void put32(std::string& b, std::size_t at, std::uint32_t v) {
  put16(b, at, static_cast<std::uint16_t>(v & 0xFFFF));
  put16(b, at + 2, static_cast<std::uint16_t>(v >> 16));
}

}  // namespace mxgate::test_support
