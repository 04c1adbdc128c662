// Content sniffing and the MS-CFB directory walk: every kind from real or
// minimal-but-valid bytes, the look-alikes that must stay unknown, and every
// prefix and single-byte corruption of a few seeds under ASan/UBSan.
// Fixtures are built here (libarchive's writer, a small CFB writer), never
// committed as binaries.
#include "filter/file_type.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "archive_fixture.hpp"

namespace mxgate::filter {
namespace {

using namespace std::string_literals;

// ---- fixtures ----------------------------------------------------------------

using Format = test_support::ArchiveFormat;
using Entry = test_support::ArchiveEntry;
using test_support::append_to_string;
using test_support::ArchiveWriteFree;
using test_support::make_archive;
using test_support::put16;
using test_support::put32;


constexpr std::uint32_t kNoStream = 0xFFFFFFFF;
constexpr std::uint32_t kFreeSect = 0xFFFFFFFF;
constexpr std::uint32_t kEndOfChain = 0xFFFFFFFE;
constexpr std::uint32_t kFatSect = 0xFFFFFFFD;
constexpr std::uint32_t kDifSect = 0xFFFFFFFC;
constexpr std::uint8_t kStorage = 1, kStream = 2, kRoot = 5;

struct DirEntry {
  std::string name;  // ASCII
  std::uint8_t type = kStream;
  std::uint32_t left = kNoStream, right = kNoStream, child = kNoStream;
};

std::string encode_dir_entry(const DirEntry& e) {
  std::string b(128, '\0');
  for (std::size_t i = 0; i < e.name.size(); ++i) put16(b, 2 * i, static_cast<unsigned char>(e.name[i]));
  put16(b, 0x40, static_cast<std::uint16_t>(2 * (e.name.size() + 1)));
  b[0x42] = static_cast<char>(e.type);
  b[0x43] = 1;  // black
  put32(b, 0x44, e.left);
  put32(b, 0x48, e.right);
  put32(b, 0x4C, e.child);
  put32(b, 0x74, kEndOfChain);  // empty streams own no sectors
  return b;
}

struct CfbLayout {
  unsigned shift = 9;                      // 9: version 3, 12: version 4
  std::vector<std::uint32_t> dir_sectors;  // directory chain; empty: right after the FAT and DIFAT
};

// A compound file per MS-CFB with the given directory and no stream data:
// FAT sectors first, then DIFAT sectors (when the FAT outgrows the header's
// 109 slots), then the directory wherever the layout puts it.
std::string make_cfb(const std::vector<DirEntry>& entries, const CfbLayout& layout = {}) {
  const std::size_t ss = std::size_t{1} << layout.shift;
  const std::size_t per_sector = ss / 4;
  const std::size_t dir_count = std::max<std::size_t>(1, (entries.size() * 128 + ss - 1) / ss);
  std::size_t fat_count = 1, difat_count = 0, total = 0;
  std::vector<std::uint32_t> dir = layout.dir_sectors;
  for (;;) {
    difat_count = fat_count > 109 ? (fat_count - 109 + per_sector - 2) / (per_sector - 1) : 0;
    const std::size_t first_free = fat_count + difat_count;
    if (layout.dir_sectors.empty()) {
      dir.clear();
      for (std::size_t i = 0; i < dir_count; ++i) dir.push_back(static_cast<std::uint32_t>(first_free + i));
    }
    total = first_free;
    for (auto s : dir) total = std::max<std::size_t>(total, s + 1);
    if (fat_count * per_sector >= total) break;
    ++fat_count;
  }
  EXPECT_EQ(dir.size(), dir_count);
  std::vector<std::uint32_t> fat(fat_count * per_sector, kFreeSect);
  for (std::size_t i = 0; i < fat_count; ++i) fat[i] = kFatSect;
  for (std::size_t i = 0; i < difat_count; ++i) fat[fat_count + i] = kDifSect;
  for (std::size_t i = 0; i < dir.size(); ++i) fat[dir[i]] = i + 1 < dir.size() ? dir[i + 1] : kEndOfChain;

  std::string file((total + 1) * ss, '\0');
  file.replace(0, 8, "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1");
  put16(file, 0x18, 0x3E);
  put16(file, 0x1A, layout.shift == 12 ? 4 : 3);
  put16(file, 0x1C, 0xFFFE);
  put16(file, 0x1E, static_cast<std::uint16_t>(layout.shift));
  put16(file, 0x20, 6);
  put32(file, 0x28, layout.shift == 12 ? static_cast<std::uint32_t>(dir_count) : 0);
  put32(file, 0x2C, static_cast<std::uint32_t>(fat_count));
  put32(file, 0x30, dir[0]);
  put32(file, 0x38, 4096);
  put32(file, 0x3C, kEndOfChain);
  put32(file, 0x44, difat_count ? static_cast<std::uint32_t>(fat_count) : kEndOfChain);
  put32(file, 0x48, static_cast<std::uint32_t>(difat_count));
  auto sector_offset = [&](std::size_t sector) { return (sector + 1) * ss; };
  for (std::size_t i = 0; i < 109; ++i) put32(file, 0x4C + 4 * i, i < fat_count ? i : kFreeSect);
  std::size_t next_fat = 109;
  for (std::size_t d = 0; d < difat_count; ++d) {
    const std::size_t at = sector_offset(fat_count + d);
    for (std::size_t k = 0; k + 1 < per_sector; ++k, ++next_fat) {
      put32(file, at + 4 * k, next_fat < fat_count ? next_fat : kFreeSect);
    }
    put32(file, at + ss - 4, d + 1 < difat_count ? fat_count + d + 1 : kEndOfChain);
  }
  for (std::size_t i = 0; i < fat.size(); ++i)
    put32(file, sector_offset(i / per_sector) + 4 * (i % per_sector), fat[i]);
  const std::size_t per_dir_sector = ss / 128;
  for (std::size_t i = 0; i < dir_count * per_dir_sector; ++i) {
    const std::string bytes = i < entries.size() ? encode_dir_entry(entries[i]) : encode_dir_entry({"", 0});
    file.replace(sector_offset(dir[i / per_dir_sector]) + 128 * (i % per_dir_sector), 128, bytes);
  }
  return file;
}

// Word 97-2003 with a project: Root > {WordDocument, Macros > VBA > {dir, _VBA_PROJECT}}.
std::vector<DirEntry> word_with_macros() {
  return {{"Root Entry", kRoot, kNoStream, kNoStream, 2},
          {"WordDocument", kStream},
          {"Macros", kStorage, 1, kNoStream, 3},
          {"VBA", kStorage, kNoStream, kNoStream, 4},
          {"dir", kStream, kNoStream, 5},
          {"_VBA_PROJECT", kStream}};
}

std::vector<DirEntry> word_without_macros() {
  return {{"Root Entry", kRoot, kNoStream, kNoStream, 2},
          {"WordDocument", kStream},
          {"1Table", kStream, 1, 3},
          {"\x05SummaryInformation", kStream}};
}

std::string pe_bytes() {
  std::string b(0x200, '\0');
  b.replace(0, 2, "MZ");
  put32(b, 0x3C, 0x80);
  b.replace(0x80, 4, "PE\0\0"s);
  put16(b, 0x84, 0x14C);  // i386
  return b;
}

// ---- sniff ----------------------------------------------------------------

TEST(FileType, Executables) {
  EXPECT_EQ(sniff(pe_bytes()), FileKind::pe_executable);
  EXPECT_EQ(sniff("\x7F"
                  "ELF\x02\x01\x01" +
                  std::string(57, '\0')),
            FileKind::elf_executable);
  for (const std::string& magic : {"\xFE\xED\xFA\xCE"s, "\xFE\xED\xFA\xCF"s, "\xCE\xFA\xED\xFE"s,
                                   "\xCF\xFA\xED\xFE"s, "\xCA\xFE\xBA\xBE"s, "\xCA\xFE\xBA\xBF"s}) {
    EXPECT_EQ(sniff(magic + std::string(28, '\0')), FileKind::macho_executable) << magic;
  }
  EXPECT_EQ(sniff("\xCA\xFE\xBA\xBE\x00\x00\x00\x34"s), FileKind::macho_executable);  // a Java class
  EXPECT_TRUE(is_executable(FileKind::pe_executable));
  EXPECT_FALSE(is_executable(FileKind::zip));
}

TEST(FileType, MzWithoutPeSignature) {
  // A DOS program (typical header fields) whose e_lfanew points nowhere.
  std::string dos(0x100, '\0');
  dos.replace(0, 2, "MZ");
  put16(dos, 2, 0x90);
  put16(dos, 4, 3);
  put16(dos, 8, 4);
  put32(dos, 0x3C, 0x7FFFFFFF);
  EXPECT_EQ(sniff(dos), FileKind::pe_executable);
  // A PE cut before its signature (a size limit): still an executable.
  std::string cut = pe_bytes().substr(0, 0x80);
  put16(cut, 2, 0x90), put16(cut, 4, 3), put16(cut, 8, 4);
  EXPECT_EQ(sniff(cut), FileKind::pe_executable);
  // Text that starts with "MZ" is not.
  EXPECT_EQ(sniff("MZ Investments quarterly report, prepared for the board of directors, Q3 2024.\n"),
            FileKind::unknown);
  EXPECT_EQ(sniff("MZ"), FileKind::unknown);
  // MZ with a wrong signature at a valid e_lfanew and an implausible DOS header.
  std::string wrong = pe_bytes();
  wrong.replace(0x80, 4, "XX\0\0"s);
  put16(wrong, 2, 0x7A7A);
  EXPECT_EQ(sniff(wrong), FileKind::unknown);
}

TEST(FileType, ArchivesFromLibarchive) {
  const std::vector<Entry> one = {{"a.txt", "hello"}};
  EXPECT_EQ(sniff(make_archive(Format::zip, one)), FileKind::zip);
  EXPECT_EQ(sniff(make_archive(Format::seven_zip, one)), FileKind::seven_zip);
  EXPECT_EQ(sniff(make_archive(Format::tar, one)), FileKind::tar);
  EXPECT_EQ(sniff(make_archive(Format::tar_gz, one)), FileKind::gzip);
  EXPECT_EQ(sniff(make_archive(Format::gzip_raw, one)), FileKind::gzip);
  EXPECT_EQ(sniff(make_archive(Format::iso, one)), FileKind::iso9660);
  EXPECT_EQ(sniff(make_archive(Format::zip, {})), FileKind::zip);  // "PK\5\6": an empty zip
  EXPECT_TRUE(is_archive(FileKind::iso9660));
  EXPECT_FALSE(is_archive(FileKind::ole_compound));
}

TEST(FileType, MagicNumbers) {
  EXPECT_EQ(sniff("Rar!\x1A\x07\x00\xCF\x90"s), FileKind::rar);
  EXPECT_EQ(sniff("Rar!\x1A\x07\x01\x00\x33"s), FileKind::rar);
  EXPECT_EQ(sniff("Rar!\x1A\x07\x02"s), FileKind::unknown);
  EXPECT_EQ(sniff(make_cfb(word_without_macros())), FileKind::ole_compound);
  const std::string lnk =
      "\x4C\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xC0\x00\x00\x00\x00\x00\x00\x46"s +
      std::string(56, '\0');
  EXPECT_EQ(sniff(lnk), FileKind::windows_shortcut);
  EXPECT_EQ(sniff(lnk.substr(0, 19)), FileKind::unknown);
  EXPECT_EQ(sniff("%PDF-1.7\n%\xE2\xE3\xCF\xD3\n"), FileKind::pdf);
  EXPECT_EQ(sniff(std::string(300, ' ') + "%PDF-1.4\n"), FileKind::pdf);
  EXPECT_EQ(sniff("\xEF\xBB\xBF\n  <!DOCTYPE html><html>"), FileKind::html);
  EXPECT_EQ(sniff("<HTML><body>hi"), FileKind::html);
  EXPECT_EQ(sniff("\x1F\x8B\x07"), FileKind::unknown);  // gzip knows only deflate (8)
  EXPECT_EQ(sniff(""), FileKind::unknown);
  EXPECT_EQ(sniff("Dear customer, please find the invoice attached."), FileKind::unknown);
}

TEST(FileType, DiscImagesAtSector16) {
  for (std::size_t offset : {0x8001u, 0x8801u, 0x9001u}) {
    std::string iso(0xA000, '\0');
    iso.replace(offset, 5, "CD001");
    EXPECT_EQ(sniff(iso), FileKind::iso9660) << offset;
    EXPECT_EQ(sniff(iso.substr(0, offset + 4)), FileKind::unknown);
  }
  std::string udf(0xA000, '\0');  // ECMA-167 volume recognition sequence
  udf.replace(0x8001, 5, "BEA01");
  udf.replace(0x8801, 5, "NSR02");
  udf.replace(0x9001, 5, "TEA01");
  EXPECT_EQ(sniff(udf), FileKind::iso9660);
}

TEST(FileType, V7TarByChecksum) {
  std::string tar = make_archive(Format::tar, {{"a.txt", "hello"}});
  tar.replace(257, 8, std::string(8, '\0'));  // no "ustar": recompute the checksum
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < 512; ++i)
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(tar[i]);
  char field[8];
  std::snprintf(field, sizeof field, "%06o", sum);
  tar.replace(148, 8, std::string(field, 6) + "\0 "s);
  EXPECT_EQ(sniff(tar), FileKind::tar);
  tar[0] ^= 1;
  EXPECT_EQ(sniff(tar), FileKind::unknown);
}

TEST(FileType, Names) {
  EXPECT_EQ(to_string(FileKind::pe_executable), "PE executable");
  EXPECT_EQ(to_string(FileKind::zip), "zip archive");
  EXPECT_EQ(to_string(FileKind::unknown), "unknown");
}

// ---- ole_has_vba_project ---------------------------------------------------

TEST(OleVba, WordWithAndWithoutProject) {
  EXPECT_TRUE(ole_has_vba_project(make_cfb(word_with_macros())));
  EXPECT_FALSE(ole_has_vba_project(make_cfb(word_without_macros())));
}

TEST(OleVba, EachMarkerAlone) {
  auto with = [](DirEntry marker) {
    return make_cfb({{"Root Entry", kRoot, kNoStream, kNoStream, 1}, std::move(marker)});
  };
  EXPECT_TRUE(ole_has_vba_project(with({"VBA", kStorage})));
  EXPECT_TRUE(ole_has_vba_project(with({"vba", kStorage})));               // CFB names compare upper-cased
  EXPECT_TRUE(ole_has_vba_project(with({"_VBA_PROJECT_CUR", kStorage})));  // Excel
  EXPECT_TRUE(ole_has_vba_project(with({"Macros", kStorage})));            // Word
  EXPECT_TRUE(ole_has_vba_project(with({"_VBA_PROJECT", kStream})));
  EXPECT_FALSE(ole_has_vba_project(with({"VBA", kStream})));  // a stream is not the project storage
  EXPECT_FALSE(ole_has_vba_project(with({"VBAX", kStorage})));
  EXPECT_FALSE(ole_has_vba_project(with({"VB", kStorage})));
  EXPECT_FALSE(ole_has_vba_project(with({"VBA", 0})));  // unallocated
}

TEST(OleVba, Version4Sectors) {
  CfbLayout v4;
  v4.shift = 12;
  EXPECT_TRUE(ole_has_vba_project(make_cfb(word_with_macros(), v4)));
  EXPECT_FALSE(ole_has_vba_project(make_cfb(word_without_macros(), v4)));
}

TEST(OleVba, FollowsTheDirectoryChainThroughTheFat) {
  // Ten entries need three 512-byte sectors; chain them backwards with gaps
  // (9, then 2, then 6) so that reading on from the first directory sector
  // runs off the end of the file and only the FAT leads to the last one.
  std::vector<DirEntry> entries = word_without_macros();
  while (entries.size() < 9) entries.push_back({"Filler" + std::to_string(entries.size()), kStream});
  entries.push_back({"VBA", kStorage});
  CfbLayout scattered;
  scattered.dir_sectors = {9, 2, 6};
  EXPECT_TRUE(ole_has_vba_project(make_cfb(entries, scattered)));
  entries.back().name = "NotVBA";
  EXPECT_FALSE(ole_has_vba_project(make_cfb(entries, scattered)));
}

TEST(OleVba, IgnoresEntriesOutsideTheDirectoryStream) {
  // A "VBA" storage entry in a free sector: a byte search finds it, the
  // directory does not hold it.
  std::string file = make_cfb(word_without_macros());
  file += encode_dir_entry({"VBA", kStorage}) + std::string(512 - 128, '\0');
  EXPECT_FALSE(ole_has_vba_project(file));
  EXPECT_NE(file.find("V\0B\0A\0"s), std::string::npos);
}

TEST(OleVba, FatBeyondTheHeaderThroughDifat) {
  // The directory's second sector is found through the FAT entry of sector
  // 14000, which lives in FAT sector 109: the 110th, listed in a DIFAT
  // sector rather than in the header's 109 slots.
  CfbLayout far;
  far.dir_sectors = {14000, 14001};
  const std::vector<DirEntry> entries = {{"Root Entry", kRoot, kNoStream, kNoStream, 1},
                                         {"WordDocument", kStream},
                                         {"1Table", kStream},
                                         {"Data", kStream},
                                         {"VBA", kStorage}};
  const std::string file = make_cfb(entries, far);
  ASSERT_GT(file.size(), 512u * 109 * 128);
  EXPECT_EQ(file.substr(0x48, 4), "\x01\x00\x00\x00"s);  // one DIFAT sector
  EXPECT_TRUE(ole_has_vba_project(file));
  std::string no_difat = file;  // without it the chain ends after the first sector
  put32(no_difat, 0x48, 0);
  EXPECT_FALSE(ole_has_vba_project(no_difat));
}

TEST(OleVba, CyclesAndWildPointersEnd) {
  std::string looping = make_cfb(word_with_macros());
  // FAT entry of the directory sector (1) pointing at itself, with the VBA
  // storage gone: the walk must end and say no.
  put32(looping, 512 + 4 * 1, 1);
  looping[512 * 2 + 3 * 128 + 0x42] = 0;
  looping[512 * 2 + 2 * 128 + 0x42] = 0;
  EXPECT_FALSE(ole_has_vba_project(looping));
  std::string wild = make_cfb(word_with_macros());
  put32(wild, 0x30, 0xFFFFFFF0);  // first directory sector far outside the file
  EXPECT_FALSE(ole_has_vba_project(wild));
  std::string bad_shift = make_cfb(word_with_macros());
  put16(bad_shift, 0x1E, 31);
  EXPECT_FALSE(ole_has_vba_project(bad_shift));
  EXPECT_FALSE(ole_has_vba_project(""));
  EXPECT_FALSE(ole_has_vba_project(pe_bytes()));
}

// ---- robustness ------------------------------------------------------------

// Every prefix and every single-byte corruption of each seed, through both
// entry points; ASan/UBSan do the asserting.
TEST(FileTypeRobustness, PrefixesAndCorruptions) {
  CfbLayout v4;
  v4.shift = 12;
  CfbLayout scattered;
  scattered.dir_sectors = {3, 1, 5};
  std::vector<DirEntry> many = word_with_macros();
  while (many.size() < 12) many.push_back({"Filler", kStream});
  const std::vector<std::string> seeds = {make_cfb(word_with_macros()),
                                          make_cfb(many, scattered),
                                          make_cfb(word_without_macros(), v4),
                                          pe_bytes(),
                                          make_archive(Format::tar, {{"a.txt", "hello"}}),
                                          make_archive(Format::zip, {{"a.txt", "hello"}})};
  std::size_t with_vba = 0;
  for (const auto& seed : seeds) {
    for (std::size_t length = 0; length <= seed.size(); ++length) {
      const std::string_view prefix(seed.data(), length);
      (void)sniff(prefix);
      with_vba += ole_has_vba_project(prefix);
    }
    std::string mutated = seed;
    for (std::size_t i = 0; i < mutated.size(); ++i) {
      for (int value : {0x00, 0xFF, static_cast<unsigned char>(seed[i]) ^ 0x41}) {
        mutated[i] = static_cast<char>(value);
        (void)sniff(mutated);
        with_vba += ole_has_vba_project(mutated);
      }
      mutated[i] = seed[i];
    }
  }
  EXPECT_GT(with_vba, 0u);
}

}  // namespace
}  // namespace mxgate::filter
