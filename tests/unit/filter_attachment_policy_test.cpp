// The attachment policy: each rule on a crafted carrier and silent on its
// legitimate twin, the same carriers inside archives, every limit at the
// limit and one past it, and truncated or corrupted archives of every length
// under ASan/UBSan.  Fixtures are built here with libarchive's writer and
// small hand-made compound files and 7z headers; nothing binary is committed.
#include "filter/attachment_policy.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
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

std::string zip(const std::vector<Entry>& entries) { return make_archive(Format::zip, entries); }

void put64(std::string& b, std::size_t at, std::uint64_t v) {
  put32(b, at, static_cast<std::uint32_t>(v));
  put32(b, at + 4, static_cast<std::uint32_t>(v >> 32));
}

std::uint32_t crc32(std::string_view data) {
  std::uint32_t crc = 0xFFFFFFFF;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
  }
  return ~crc;
}

// A version-3 compound file (MS-CFB): sector 0 the FAT, sector 1 the
// directory with a root and up to three children of the root.
std::string make_cfb(const std::vector<std::pair<std::string, std::uint8_t>>& children) {
  std::string file(std::size_t{512} * 3, '\0');
  file.replace(0, 8, "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1");
  put16(file, 0x18, 0x3E);
  put16(file, 0x1A, 3);
  put16(file, 0x1C, 0xFFFE);
  put16(file, 0x1E, 9);
  put16(file, 0x20, 6);
  put32(file, 0x2C, 1);  // one FAT sector
  put32(file, 0x30, 1);  // the directory at sector 1
  put32(file, 0x38, 4096);
  put32(file, 0x3C, 0xFFFFFFFE);
  put32(file, 0x44, 0xFFFFFFFE);
  for (std::size_t i = 0; i < 109; ++i) put32(file, 0x4C + 4 * i, i == 0 ? 0 : 0xFFFFFFFF);
  for (std::size_t i = 0; i < 128; ++i) put32(file, 512 + 4 * i, 0xFFFFFFFF);
  put32(file, 512, 0xFFFFFFFD);      // sector 0: FAT
  put32(file, 512 + 4, 0xFFFFFFFE);  // sector 1: the directory, one sector long
  auto entry = [&](std::size_t index, std::string_view name, std::uint8_t type, std::uint32_t right,
                   std::uint32_t child) {
    const std::size_t at = 1024 + 128 * index;
    for (std::size_t i = 0; i < name.size(); ++i)
      put16(file, at + 2 * i, static_cast<unsigned char>(name[i]));
    put16(file, at + 0x40, static_cast<std::uint16_t>(2 * (name.size() + 1)));
    file[at + 0x42] = static_cast<char>(type);
    put32(file, at + 0x44, 0xFFFFFFFF);
    put32(file, at + 0x48, right);
    put32(file, at + 0x4C, child);
    put32(file, at + 0x74, 0xFFFFFFFE);
  };
  entry(0, "Root Entry", 5, 0xFFFFFFFF, children.empty() ? 0xFFFFFFFF : 1);
  for (std::size_t i = 0; i < children.size() && i < 3; ++i) {
    entry(i + 1, children[i].first, children[i].second,
          i + 1 < children.size() ? static_cast<std::uint32_t>(i + 2) : 0xFFFFFFFF, 0xFFFFFFFF);
  }
  for (std::size_t i = children.size() + 1; i < 4; ++i) {
    put32(file, 1024 + 128 * i + 0x44, 0xFFFFFFFF);
    put32(file, 1024 + 128 * i + 0x48, 0xFFFFFFFF);
    put32(file, 1024 + 128 * i + 0x4C, 0xFFFFFFFF);
  }
  return file;
}

std::string ole_with_vba() { return make_cfb({{"WordDocument", 2}, {"Macros", 1}, {"VBA", 1}}); }
std::string ole_without_vba() { return make_cfb({{"WordDocument", 2}, {"1Table", 2}}); }
std::string vba_project_bin() { return make_cfb({{"VBA", 1}, {"PROJECT", 2}}); }

// A 7z archive (7zFormat.txt) with one file whose folder's only coder is
// AES-256 + SHA-256 (06 F1 07 01): libarchive lists it and reports the
// entry encrypted.  libarchive cannot write encrypted 7z itself.
std::string seven_zip_aes(std::string_view name) {
  const std::string packed(16, '\x5A');
  std::string header = "\x01\x04\x06\x00\x01\x09\x10\x00\x07\x0B\x01\x00"s;  // PackInfo, Folder...
  header += "\x01\x24\x06\xF1\x07\x01\x02\x00\x00"s;                         // 1 coder: AES, 2 bytes props
  header += "\x0C\x10\x00"s;                                                 // unpack size 16
  header += "\x08\x0A\x01"s;                                                 // SubStreamsInfo: CRC
  std::string crc(4, '\0');
  put32(crc, 0, crc32(packed));
  header += crc + "\x00\x00"s;  // end SubStreamsInfo, end MainStreamsInfo
  std::string utf16;
  for (char c : name) utf16 += std::string{c, '\0'};
  utf16 += "\x00\x00"s;
  header += "\x05\x01\x11"s + static_cast<char>(utf16.size() + 1) + "\x00"s + utf16 + "\x00\x00"s;
  std::string tail(20, '\0');
  put64(tail, 0, packed.size());
  put64(tail, 8, header.size());
  put32(tail, 16, crc32(header));
  std::string start(4, '\0');
  put32(start, 0, crc32(tail));
  return "7z\xBC\xAF\x27\x1C\x00\x04"s + start + tail + packed + header;
}

// A 7z archive whose header itself is AES-encrypted (7z -mhe=on): the
// listing fails with "The archive header is encrypted".
std::string seven_zip_encrypted_header() {
  const std::string packed(32, '\x22');
  const std::string header =
      "\x17\x06\x00\x01\x09\x20\x00\x07\x0B\x01\x00\x01\x24\x06\xF1\x07\x01\x02\x00\x00\x0C\x20\x00\x00"s;
  std::string tail(20, '\0');
  put64(tail, 0, packed.size());
  put64(tail, 8, header.size());
  put32(tail, 16, crc32(header));
  std::string start(4, '\0');
  put32(start, 0, crc32(tail));
  return "7z\xBC\xAF\x27\x1C\x00\x04"s + start + tail + packed + header;
}

std::string pe_bytes() {
  std::string b(0x200, '\0');
  b.replace(0, 2, "MZ");
  put32(b, 0x3C, 0x80);
  b.replace(0x80, 4, "PE\0\0"s);
  put16(b, 0x84, 0x14C);
  return b;
}

const std::string kPdf =
    "%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<<>>\n%%EOF\n";
const std::string kText = "Minutes of the meeting, nothing to see here.\n";
const std::string kLnk = "\x4C\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xC0\x00\x00\x00\x00\x00\x00\x46"s +
                         std::string(56, '\0');

const std::string kContentTypes =
    R"(<?xml version="1.0" encoding="UTF-8" standalone="yes"?>)"
    R"(<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">)"
    R"(<Default Extension="xml" ContentType="application/xml"/>)"
    R"(<Override PartName="/word/document.xml" )"
    R"(ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>)"
    R"(</Types>)";

std::string docx(std::vector<Entry> extra = {}, std::string content_types = kContentTypes) {
  std::vector<Entry> entries = {{"[Content_Types].xml", std::move(content_types)},
                                {"_rels/.rels", "<Relationships/>"},
                                {"word/document.xml", "<w:document><w:body/></w:document>"}};
  for (auto& e : extra) entries.push_back(std::move(e));
  return zip(entries);
}

std::string odt(std::vector<Entry> extra = {}) {
  std::vector<Entry> entries = {{"mimetype", "application/vnd.oasis.opendocument.text"},
                                {"content.xml", "<office:document-content/>"},
                                {"META-INF/manifest.xml", "<manifest:manifest/>"}};
  for (auto& e : extra) entries.push_back(std::move(e));
  return zip(entries);
}

Part attachment(std::string filename, std::string data,
                std::string content_type = "application/octet-stream") {
  Part part;
  part.content_type = std::move(content_type);
  part.filename = std::move(filename);
  part.data = std::move(data);
  part.attachment = true;
  part.depth = 1;
  return part;
}

Findings check(std::vector<Part> parts, const AttachmentLimits& limits = {}) {
  ParsedMessage message;
  message.parts = std::move(parts);
  return check_attachments(message, limits);
}

Findings check(Part part, const AttachmentLimits& limits = {}) {
  return check(std::vector<Part>{std::move(part)}, limits);
}

std::vector<std::string> rules(const Findings& findings) {
  std::vector<std::string> out;
  for (const auto& f : findings.findings) out.push_back(f.rule);
  return out;
}

std::string detail_of(const Findings& findings, std::string_view rule) {
  for (const auto& f : findings.findings) {
    if (f.rule == rule) return f.detail;
  }
  return "(no " + std::string(rule) + ")";
}

using Rules = std::vector<std::string>;

// ---- EXECUTABLE_ATTACHMENT --------------------------------------------------

TEST(AttachmentPolicy, ExecutableByContentNotByDeclaredType) {
  const Findings found = check(attachment("report.pdf", pe_bytes(), "application/pdf"));
  EXPECT_EQ(rules(found), Rules{"EXECUTABLE_ATTACHMENT"});
  EXPECT_EQ(detail_of(found, "EXECUTABLE_ATTACHMENT"), "report.pdf: PE executable");
  EXPECT_EQ(found.findings[0].category, Category::malware);
  EXPECT_EQ(found.findings[0].score, 1.0);
  EXPECT_TRUE(found.failures.empty());
  // Its twin: a real PDF called report.pdf.
  EXPECT_TRUE(check(attachment("report.pdf", kPdf, "application/pdf")).findings.empty());
}

TEST(AttachmentPolicy, ElfMachOAndJava) {
  EXPECT_EQ(detail_of(check(attachment("run",
                                       "\x7F"
                                       "ELF\x02\x01\x01" +
                                           std::string(57, '\0'))),
                      "EXECUTABLE_ATTACHMENT"),
            "run: ELF executable");
  EXPECT_EQ(detail_of(check(attachment("a.bin", "\xCF\xFA\xED\xFE" + std::string(28, '\0'))),
                      "EXECUTABLE_ATTACHMENT"),
            "a.bin: Mach-O executable");
  EXPECT_EQ(detail_of(check(attachment("", "\xCA\xFE\xBA\xBE\x00\x00\x00\x34"s)), "EXECUTABLE_ATTACHMENT"),
            "(unnamed): Mach-O universal binary or Java class");
}

TEST(AttachmentPolicy, WhichPartsAreChecked) {
  // Not marked as an attachment, but binary: checked.
  Part inline_pe = attachment("", pe_bytes());
  inline_pe.attachment = false;
  EXPECT_EQ(rules(check(inline_pe)), Rules{"EXECUTABLE_ATTACHMENT"});
  // A text body is not, whatever its name says.
  Part body = attachment("body.js", "var greeting = 'hello';\n", "text/plain");
  body.attachment = false;
  EXPECT_TRUE(check(body).findings.empty());
  // Nor an inline PDF or HTML part.
  Part html = attachment("x.pdf.exe", "<html><body>hi</body></html>", "text/html");
  html.attachment = false;
  EXPECT_TRUE(check(html).findings.empty());
}

// ---- SCRIPT_ATTACHMENT ----------------------------------------------------------

TEST(AttachmentPolicy, ScriptsAndLaunchersByName) {
  for (std::string name :
       {"invoice.js", "INVOICE.JS", "a.jse", "b.vbs",  "c.vbe", "d.wsf", "e.hta", "f.ps1",   "g.psm1",
        "h.bat",      "i.cmd",      "j.scr", "k.com",  "l.pif", "m.cpl", "n.msi", "o.jar",   "p.lnk",
        "q.iso",      "r.img",      "s.vhd", "t.vhdx", "u.one", "v.url", "w.xll", "run.js.", "run.js . ."}) {
    const Findings found = check(attachment(name, kText));
    EXPECT_EQ(rules(found), Rules{"SCRIPT_ATTACHMENT"}) << name;
  }
  EXPECT_EQ(detail_of(check(attachment("invoice.js", kText)), "SCRIPT_ATTACHMENT"), "invoice.js: .js file");
  for (std::string name : {"notes.txt", "photo.jpg", "report.pdf", "data.json", "js", "archive.tar", "README",
                           "script.js.txt"}) {
    EXPECT_TRUE(check(attachment(name, kText)).findings.empty()) << name;
  }
}

TEST(AttachmentPolicy, ShortcutAndDiscImageByContent) {
  EXPECT_EQ(detail_of(check(attachment("photo.jpg", kLnk)), "SCRIPT_ATTACHMENT"),
            "photo.jpg: Windows shortcut");
  const std::string iso = make_archive(Format::iso, {{"readme.txt", kText}});
  const Findings found = check(attachment("holiday.bin", iso));
  EXPECT_EQ(rules(found), Rules{"SCRIPT_ATTACHMENT"});
  EXPECT_EQ(detail_of(found, "SCRIPT_ATTACHMENT"), "holiday.bin: ISO 9660/UDF disc image");
}

// ---- OFFICE_MACRO -------------------------------------------------------------

TEST(AttachmentPolicy, OleDocumentWithAndWithoutVba) {
  const Findings found = check(attachment("invoice.doc", ole_with_vba(), "application/msword"));
  EXPECT_EQ(rules(found), Rules{"OFFICE_MACRO"});
  EXPECT_EQ(detail_of(found, "OFFICE_MACRO"), "invoice.doc: VBA project in a compound file");
  EXPECT_TRUE(check(attachment("invoice.doc", ole_without_vba(), "application/msword")).findings.empty());
}

TEST(AttachmentPolicy, OoxmlWithVbaProjectPart) {
  const Findings found =
      check(attachment("invoice.docx", docx({{"word/vbaProject.bin", vba_project_bin()}})));
  EXPECT_EQ(rules(found), Rules{"OFFICE_MACRO"});
  EXPECT_EQ(detail_of(found, "OFFICE_MACRO"),
            "invoice.docx > word/vbaProject.bin: VBA project part (and 1 more)");
  // The twin: a .docx without vbaProject.bin.
  EXPECT_TRUE(check(attachment("invoice.docx", docx())).findings.empty());
}

TEST(AttachmentPolicy, OoxmlVbaProjectUnderAnotherName) {
  // The part's name is free in OPC; its content still says VBA.
  const Findings found = check(attachment("q3.xlsx", docx({{"xl/media/image1.bin", vba_project_bin()}})));
  EXPECT_EQ(detail_of(found, "OFFICE_MACRO"),
            "q3.xlsx > xl/media/image1.bin: VBA project in a compound file");
}

TEST(AttachmentPolicy, OoxmlMacroEnabledContentType) {
  std::string types = kContentTypes;
  const std::string main = "wordprocessingml.document.main+xml";
  types.replace(types.find(main), main.size(), "ms-word.document.macroEnabled.main+xml");
  const Findings found = check(attachment("report.docx", docx({}, types)));
  EXPECT_EQ(rules(found), Rules{"OFFICE_MACRO"});
  EXPECT_EQ(detail_of(found, "OFFICE_MACRO"),
            "report.docx > [Content_Types].xml: macro-enabled content type");
}

TEST(AttachmentPolicy, OdfBasicModules) {
  const Findings found =
      check(attachment("minutes.odt", odt({{"Basic/script-lc.xml", "<library:libraries/>"},
                                           {"Basic/Standard/script-lb.xml", "<library:library/>"},
                                           {"Basic/Standard/Module1.xml", "<script:module/>"}})));
  EXPECT_EQ(rules(found), Rules{"OFFICE_MACRO"});
  EXPECT_EQ(detail_of(found, "OFFICE_MACRO"), "minutes.odt > Basic/Standard/Module1.xml: ODF macro");
  EXPECT_TRUE(check(attachment("minutes.odt", odt())).findings.empty());
  // An index without modules is no macro; Scripts/ outside an ODF package is a folder.
  EXPECT_TRUE(check(attachment("minutes.odt", odt({{"Basic/script-lc.xml", "<library:libraries/>"}})))
                  .findings.empty());
  EXPECT_TRUE(check(attachment("site.zip", zip({{"Scripts/app.ts", kText}}))).findings.empty());
}

// ---- DOUBLE_EXTENSION ------------------------------------------------------------

TEST(AttachmentPolicy, DoubleExtensions) {
  EXPECT_EQ(rules(check(attachment("invoice.pdf.exe", kText))), Rules{"DOUBLE_EXTENSION"});
  EXPECT_EQ(detail_of(check(attachment("invoice.pdf.exe", kText)), "DOUBLE_EXTENSION"),
            "invoice.pdf.exe: .pdf name hides .exe");
  EXPECT_EQ(rules(check(attachment("scan.doc   .js", kText))),
            (Rules{"SCRIPT_ATTACHMENT", "DOUBLE_EXTENSION"}));
  for (std::string name :
       {"a.pdf____.scr", "Invoice.PDF.EXE", "photo.jpg.exe. .", "x.docx\t.exe", "x.pdf...exe",
        "statement.pdf\u00A0\u00A0\u00A0.exe", "statement.pdf\u200B.exe", "order.zip.exe"}) {
    EXPECT_EQ(detail_of(check(attachment(name, kText)), "DOUBLE_EXTENSION").find("(no"), std::string::npos)
        << name;
  }
  for (std::string name : {"report.2024.pdf", "archive.tar.gz", "setup-1.2.exe", "tool.v2.exe",
                           "my.notes.txt", "file.exe.pdf", "backup.pdf.zip"}) {
    EXPECT_TRUE(check(attachment(name, kText)).findings.empty()) << name;
  }
}

TEST(AttachmentPolicy, RightToLeftOverride) {
  // "invoice\u202Efdp.exe" shows as "invoiceexe.pdf".
  const Findings found = check(attachment("invoice\u202Efdp.exe", kText));
  EXPECT_EQ(rules(found), Rules{"DOUBLE_EXTENSION"});
  EXPECT_EQ(detail_of(found, "DOUBLE_EXTENSION"),
            "invoice<U+202E>fdp.exe: bidirectional override hides .exe");
  EXPECT_EQ(rules(check(attachment("photo\u202Egpj.scr", kText))),
            (Rules{"SCRIPT_ATTACHMENT", "DOUBLE_EXTENSION"}));
  // An override in a name that really ends in .pdf hides nothing dangerous.
  EXPECT_TRUE(check(attachment("\u202Bfile\u202C.pdf", kPdf)).findings.empty());
}

// ---- ENCRYPTED_ARCHIVE ------------------------------------------------------------

TEST(AttachmentPolicy, EncryptedZip) {
  for (const char* method : {"zip:encryption=zipcrypt", "zip:encryption=aes256"}) {
    const std::string encrypted = make_archive(Format::zip, {{"statement.txt", kText}}, method, "infected");
    const Findings found = check(attachment("statement.zip", encrypted));
    EXPECT_EQ(rules(found), Rules{"ENCRYPTED_ARCHIVE"}) << method;
    EXPECT_EQ(detail_of(found, "ENCRYPTED_ARCHIVE"), "statement.zip > statement.txt: encrypted entry");
  }
  EXPECT_TRUE(check(attachment("statement.zip", zip({{"statement.txt", kText}}))).findings.empty());
}

TEST(AttachmentPolicy, EncryptedEntryNamesAreStillChecked) {
  const std::string encrypted =
      make_archive(Format::zip, {{"invoice.pdf.exe", pe_bytes()}}, "zip:encryption=zipcrypt", "infected");
  EXPECT_EQ(rules(check(attachment("invoice.zip", encrypted))),
            (Rules{"DOUBLE_EXTENSION", "ENCRYPTED_ARCHIVE"}));
}

TEST(AttachmentPolicy, Encrypted7z) {
  const Findings entries = check(attachment("payload.7z", seven_zip_aes("payload.txt")));
  EXPECT_EQ(rules(entries), Rules{"ENCRYPTED_ARCHIVE"});
  EXPECT_EQ(detail_of(entries, "ENCRYPTED_ARCHIVE"), "payload.7z > payload.txt: encrypted entry");
  const Findings header = check(attachment("payload.7z", seven_zip_encrypted_header()));
  EXPECT_EQ(rules(header), Rules{"ENCRYPTED_ARCHIVE"});
  EXPECT_NE(detail_of(header, "ENCRYPTED_ARCHIVE").find("encrypted"), std::string::npos);
  EXPECT_TRUE(check(attachment("payload.7z", make_archive(Format::seven_zip, {{"payload.txt", kText}})))
                  .findings.empty());
}

// ---- inside archives ----------------------------------------------------------

TEST(AttachmentPolicy, PlainArchiveOfDocumentsIsClean) {
  EXPECT_TRUE(
      check(attachment("documents.zip", zip({{"notes.txt", kText}, {"report.pdf", kPdf}}))).findings.empty());
}

TEST(AttachmentPolicy, CarriersInsideArchivesCarryTheirPath) {
  const Findings found =
      check(attachment("invoice.zip", zip({{"readme.txt", kText}, {"setup.exe", pe_bytes()}})));
  EXPECT_EQ(rules(found), Rules{"EXECUTABLE_ATTACHMENT"});
  EXPECT_EQ(detail_of(found, "EXECUTABLE_ATTACHMENT"), "invoice.zip > setup.exe: PE executable");

  const std::string inner = zip({{"x.exe", pe_bytes()}});
  EXPECT_EQ(detail_of(check(attachment("outer.zip", zip({{"inner.zip", inner}}))), "EXECUTABLE_ATTACHMENT"),
            "outer.zip > inner.zip > x.exe: PE executable");
  EXPECT_EQ(detail_of(check(attachment("a.7z", make_archive(Format::seven_zip, {{"dir/run.vbs", kText}}))),
                      "SCRIPT_ATTACHMENT"),
            "a.7z > dir/run.vbs: .vbs file");
  EXPECT_EQ(detail_of(check(attachment("a.tgz", make_archive(Format::tar_gz, {{"bin/tool", pe_bytes()}}))),
                      "EXECUTABLE_ATTACHMENT"),
            "a.tgz > bin/tool: PE executable");
  EXPECT_EQ(detail_of(check(attachment("setup.exe.gz", make_archive(Format::gzip_raw, {{"x", pe_bytes()}}))),
                      "EXECUTABLE_ATTACHMENT"),
            "setup.exe.gz > setup.exe: PE executable");
  EXPECT_EQ(detail_of(check(attachment("scan.pdf.js.gz", make_archive(Format::gzip_raw, {{"x", kText}}))),
                      "DOUBLE_EXTENSION"),
            "scan.pdf.js.gz > scan.pdf.js: .pdf name hides .js");
  const Findings iso = check(attachment("disk.iso", make_archive(Format::iso, {{"setup.exe", pe_bytes()}})));
  EXPECT_EQ(rules(iso), (Rules{"SCRIPT_ATTACHMENT", "EXECUTABLE_ATTACHMENT"}));
  EXPECT_EQ(detail_of(iso, "EXECUTABLE_ATTACHMENT"), "disk.iso > setup.exe: PE executable");
  EXPECT_EQ(detail_of(check(attachment("a.zip", zip({{"a\u202Efdp.exe", kText}}))), "DOUBLE_EXTENSION"),
            "a.zip > a<U+202E>fdp.exe: bidirectional override hides .exe");
  EXPECT_EQ(detail_of(check(attachment("a.zip", zip({{"macro.doc", ole_with_vba()}}))), "OFFICE_MACRO"),
            "a.zip > macro.doc: VBA project in a compound file");
  EXPECT_EQ(
      detail_of(check(attachment("a.zip", zip({{"b.zip", make_archive(Format::zip, {{"c.txt", kText}},
                                                                      "zip:encryption=zipcrypt", "x")}}))),
                "ENCRYPTED_ARCHIVE"),
      "a.zip > b.zip > c.txt: encrypted entry");
}

TEST(AttachmentPolicy, EachRuleOncePerPart) {
  const Findings found = check(attachment(
      "tools.zip",
      zip({{"a.exe", pe_bytes()}, {"b.exe", pe_bytes()}, {"c.exe", pe_bytes()}, {"d.js", kText}})));
  EXPECT_EQ(rules(found), (Rules{"EXECUTABLE_ATTACHMENT", "SCRIPT_ATTACHMENT"}));
  EXPECT_EQ(detail_of(found, "EXECUTABLE_ATTACHMENT"), "tools.zip > a.exe: PE executable (and 2 more)");
  // Two parts, two findings.
  EXPECT_EQ(rules(check({attachment("a.exe", pe_bytes()), attachment("b.exe", pe_bytes())})),
            (Rules{"EXECUTABLE_ATTACHMENT", "EXECUTABLE_ATTACHMENT"}));
}

// ---- limits --------------------------------------------------------------------

std::string nested_zips(unsigned levels, std::string leaf_name, std::string leaf) {
  std::string data = std::move(leaf);
  std::string name = std::move(leaf_name);
  for (unsigned level = levels; level >= 1; --level) {
    data = zip({{name, data}});
    name = "level" + std::to_string(level) + ".zip";
  }
  return data;
}

TEST(AttachmentPolicy, DepthAtTheLimitAndOnePast) {
  // level1.zip > level2.zip > level3.zip > x.exe: three archive levels.
  const Findings three = check(attachment("level1.zip", nested_zips(3, "x.exe", pe_bytes())));
  EXPECT_EQ(rules(three), Rules{"EXECUTABLE_ATTACHMENT"});
  EXPECT_EQ(detail_of(three, "EXECUTABLE_ATTACHMENT"),
            "level1.zip > level2.zip > level3.zip > x.exe: PE executable");
  EXPECT_TRUE(check(attachment("level1.zip", nested_zips(3, "x.txt", kText))).findings.empty());
  const Findings four = check(attachment("level1.zip", nested_zips(4, "x.txt", kText)));
  EXPECT_EQ(rules(four), Rules{"ARCHIVE_LIMIT"});
  EXPECT_EQ(detail_of(four, "ARCHIVE_LIMIT"),
            "level1.zip > level2.zip > level3.zip > level4.zip: archive nested deeper than 3 levels "
            "(max_archive_depth)");
  AttachmentLimits none;
  none.max_archive_depth = 0;
  EXPECT_EQ(rules(check(attachment("a.zip", zip({{"x.txt", kText}})), none)), Rules{"ARCHIVE_LIMIT"});
}

// A stored (uncompressed) zip of `count` one-byte files: fast to write and read.
std::string many_files(std::size_t count, std::string_view prefix) {
  std::vector<Entry> entries;
  for (std::size_t i = 0; i < count; ++i)
    entries.push_back({std::string(prefix) + std::to_string(i) + ".txt", "x"});
  return make_archive(Format::zip, entries, "zip:compression=store");
}

TEST(AttachmentPolicy, EntriesAtTheLimitAndOnePast) {
  EXPECT_TRUE(check(attachment("many.zip", many_files(1000, "f"))).findings.empty());
  const Findings over = check(attachment("many.zip", many_files(1001, "f")));
  EXPECT_EQ(rules(over), Rules{"ARCHIVE_LIMIT"});
  EXPECT_EQ(detail_of(over, "ARCHIVE_LIMIT"),
            "many.zip: more than 1000 archive entries in the message (max_archive_entries)");
  // The count is per message (here with a limit of 10): 6 + 4 is fine,
  // 6 + 5 is not, and an archive after the budget ran out is not opened.
  AttachmentLimits ten;
  ten.max_archive_entries = 10;
  EXPECT_TRUE(check({attachment("a.zip", many_files(6, "a")), attachment("b.zip", many_files(4, "b"))}, ten)
                  .findings.empty());
  const Findings split = check({attachment("a.zip", many_files(6, "a")),
                                attachment("b.zip", many_files(5, "b")), attachment("c.zip", zip({}))},
                               ten);
  EXPECT_EQ(rules(split), (Rules{"ARCHIVE_LIMIT", "ARCHIVE_LIMIT"}));
  EXPECT_EQ(split.findings[0].detail,
            "b.zip: more than 10 archive entries in the message (max_archive_entries)");
  EXPECT_EQ(split.findings[1].detail,
            "c.zip: not inspected, more than 10 archive entries in the message (max_archive_entries)");
  // Nested entries count too: 1 (inner.zip) + 1000, reported once.
  const Findings nested = check(attachment("outer.zip", zip({{"inner.zip", many_files(1000, "f")}})));
  EXPECT_EQ(rules(nested), Rules{"ARCHIVE_LIMIT"});
  EXPECT_EQ(detail_of(nested, "ARCHIVE_LIMIT"),
            "outer.zip > inner.zip: more than 1000 archive entries in the message (max_archive_entries)");
}

TEST(AttachmentPolicy, ExpandedBytesAtTheLimitAndOnePast) {
  AttachmentLimits limits;
  limits.max_expanded_bytes = 100000;
  const std::string half(50000, 'a');
  EXPECT_TRUE(check(attachment("big.zip", zip({{"a.txt", half}, {"b.txt", half}})), limits).findings.empty());
  const Findings over = check(attachment("big.zip", zip({{"a.txt", half}, {"b.txt", half + "b"}})), limits);
  EXPECT_EQ(rules(over), Rules{"ARCHIVE_LIMIT"});
  EXPECT_EQ(
      detail_of(over, "ARCHIVE_LIMIT"),
      "big.zip > b.txt: more than 100000 bytes expanded from archives in the message (max_expanded_bytes)");
  // A nested archive counts as an entry of its parent and again through its
  // own entries: inner.zip's bytes + 50000 + 50000 > 100000.
  const std::string inner = zip({{"a.txt", half}, {"b.txt", half}});
  EXPECT_EQ(rules(check(attachment("outer.zip", zip({{"inner.zip", inner}})), limits)),
            Rules{"ARCHIVE_LIMIT"});
  limits.max_expanded_bytes = 100000 + inner.size();
  EXPECT_TRUE(check(attachment("outer.zip", zip({{"inner.zip", inner}})), limits).findings.empty());
}

TEST(AttachmentPolicy, WhatWasReadBeforeALimitIsStillChecked) {
  AttachmentLimits limits;
  limits.max_expanded_bytes = 1000;
  const Findings found =
      check(attachment("tools.zip", zip({{"setup.exe", pe_bytes() + std::string(100000, '\0')}})), limits);
  EXPECT_EQ(rules(found), (Rules{"ARCHIVE_LIMIT", "EXECUTABLE_ATTACHMENT"}));
  EXPECT_EQ(detail_of(found, "EXECUTABLE_ATTACHMENT"), "tools.zip > setup.exe: PE executable");
}

// One entry of `size` zeros, written a megabyte at a time at the fastest
// deflate level: some 64 KiB of zip that expands past the default budget.
std::string zip_bomb(std::size_t size) {
  std::string out;
  std::unique_ptr<archive, ArchiveWriteFree> writer(archive_write_new());
  archive* a = writer.get();
  archive_write_set_format_zip(a);
  EXPECT_EQ(archive_write_set_options(a, "zip:compression-level=1"), ARCHIVE_OK);
  EXPECT_EQ(archive_write_open2(a, &out, nullptr, append_to_string, nullptr, nullptr), ARCHIVE_OK);
  archive_entry* entry = archive_entry_new();
  archive_entry_set_pathname(entry, "zeros.bin");
  archive_entry_set_size(entry, static_cast<la_int64_t>(size));
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_perm(entry, 0644);
  EXPECT_EQ(archive_write_header(a, entry), ARCHIVE_OK);
  archive_entry_free(entry);
  const std::string megabyte(1u << 20, '\0');
  for (std::size_t written = 0; written < size;) {
    const std::size_t n = std::min(megabyte.size(), size - written);
    EXPECT_EQ(archive_write_data(a, megabyte.data(), n), static_cast<la_ssize_t>(n));
    written += n;
  }
  EXPECT_EQ(archive_write_close(a), ARCHIVE_OK);
  return out;
}

TEST(AttachmentPolicy, ZipBombStopsAtTheDefaultLimit) {
  const std::string bomb = zip_bomb((64u << 20) + 1);
  ASSERT_LT(bomb.size(), 1u << 20);
  const Findings found = check(attachment("bomb.zip", bomb));
  EXPECT_EQ(rules(found), Rules{"ARCHIVE_LIMIT"});
  EXPECT_EQ(detail_of(found, "ARCHIVE_LIMIT"),
            "bomb.zip > zeros.bin: more than 67108864 bytes expanded from archives in the message "
            "(max_expanded_bytes)");
}

// ---- ARCHIVE_UNREADABLE --------------------------------------------------------

TEST(AttachmentPolicy, UnreadableArchives) {
  const std::string broken = "PK\x03\x04" + std::string(200, '\x02');
  const Findings found = check(attachment("invoice.zip", broken));
  EXPECT_EQ(rules(found), Rules{"ARCHIVE_UNREADABLE"});
  EXPECT_EQ(detail_of(found, "ARCHIVE_UNREADABLE").rfind("invoice.zip: unreadable zip archive (", 0), 0u);
  EXPECT_EQ(rules(check(attachment("x.rar", "Rar!\x1A\x07\x00"s + std::string(100, '\x01')))),
            Rules{"ARCHIVE_UNREADABLE"});
  // Magic alone is not enough: the name must claim an archive too.
  EXPECT_TRUE(check(attachment("data.bin", broken)).findings.empty());
  EXPECT_TRUE(check(attachment("", broken)).findings.empty());
  // Cut by the MIME decoded-size limit: already reported as a parse limit.
  Part cut = attachment("invoice.zip", broken);
  cut.truncated = true;
  EXPECT_TRUE(check(cut).findings.empty());
  // An unreadable archive inside an archive.
  EXPECT_EQ(detail_of(check(attachment("a.zip", zip({{"b.zip", broken}}))), "ARCHIVE_UNREADABLE")
                .rfind("a.zip > b.zip: unreadable zip archive", 0),
            0u);
}

TEST(AttachmentPolicy, TruncatedGzipAfterSomeContentIsNotFlagged) {
  std::string log;
  for (int i = 0; log.size() < 200000; ++i) log += "line " + std::to_string(i * 7919 % 100003) + " ok\n";
  const std::string gz = make_archive(Format::gzip_raw, {{"x", log}});
  EXPECT_TRUE(check(attachment("server.log.gz", gz)).findings.empty());
  EXPECT_TRUE(check(attachment("server.log.gz", gz.substr(0, gz.size() / 2))).findings.empty());
  // A gzip that yields nothing at all is flagged.
  EXPECT_EQ(rules(check(attachment("server.log.gz", gz.substr(0, 12)))), Rules{"ARCHIVE_UNREADABLE"});
  // A truncated zip hides entries other unpackers would show.
  const std::string z = zip({{"a.txt", log}, {"b.txt", log}});
  EXPECT_EQ(rules(check(attachment("logs.zip", z.substr(0, z.size() * 3 / 4)))), Rules{"ARCHIVE_UNREADABLE"});
}

// ---- robustness ---------------------------------------------------------------

// Every prefix of a few archives and documents and every single-byte
// corruption of most of them: no crash and no sanitizer report.  Corrupted
// 7z headers are left to libarchive's own fuzzing: they make libarchive and
// liblzma ask for allocations of up to gigabytes, which cost seconds under
// ASan and test nothing of ours.
TEST(AttachmentPolicyRobustness, PrefixesAndCorruptions) {
  const std::string nested = zip({{"setup.exe", pe_bytes()}, {"inner.zip", zip({{"x.js", kText}})}});
  const std::string package =
      zip({{"[Content_Types].xml", "<Types/>"}, {"word/vbaProject.bin", vba_project_bin()}});
  const std::string tgz = make_archive(Format::tar_gz, {{"a.txt", kText}, {"b.exe", pe_bytes()}});
  const std::string encrypted =
      make_archive(Format::zip, {{"a.exe", pe_bytes()}}, "zip:encryption=zipcrypt", "x");
  const std::string lzma = make_archive(Format::seven_zip, {{"a.txt", kText}, {"b.exe", pe_bytes()}});
  const std::vector<std::pair<std::string, std::string>> truncated = {
      {"a.zip", nested},
      {"a.docx", package},
      {"a.tgz", tgz},
      {"a.zip", encrypted},
      {"a.7z", lzma},
      {"a.7z", seven_zip_aes("x.exe")},
      {"a.7z", seven_zip_encrypted_header()},
      {"a.gz", make_archive(Format::gzip_raw, {{"x", pe_bytes()}})},
      {"a.doc", ole_with_vba()},
  };
  for (const auto& [name, seed] : truncated) {
    for (std::size_t length = 0; length <= seed.size(); ++length) {
      (void)check(attachment(name, seed.substr(0, length)));
    }
  }
  const std::vector<std::pair<std::string, std::string>> corrupted = {
      {"a.zip", nested},
      {"a.tgz", tgz},
      {"a.zip", encrypted},
      {"a.doc", ole_with_vba()},
  };
  for (const auto& [name, seed] : corrupted) {
    std::string mutated = seed;
    for (std::size_t i = 0; i < mutated.size(); ++i) {
      mutated[i] = static_cast<char>(mutated[i] ^ 0xA5);
      (void)check(attachment(name, mutated));
      mutated[i] = seed[i];
    }
  }
  // A large seed at a stride: the prefixes of an ISO image, one per 4093 bytes.
  const std::string iso = make_archive(Format::iso, {{"setup.exe", pe_bytes()}});
  for (std::size_t length = 0; length <= iso.size(); length += 4093) {
    (void)check(attachment("a.iso", iso.substr(0, length)));
  }
}

}  // namespace
}  // namespace mxgate::filter
