// RDATA parsers of src/dns/wire.hpp, fed hand-made wire bytes: every field,
// every limit at the limit and one past it, and every malformed shape.
#include "dns/wire.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mxgate::dns::wire {
namespace {

using Wire = std::vector<std::uint8_t>;

Wire name_wire(const std::vector<std::string>& labels) {
  Wire out;
  for (const auto& label : labels) {
    out.push_back(static_cast<std::uint8_t>(label.size()));
    out.insert(out.end(), label.begin(), label.end());
  }
  out.push_back(0);
  return out;
}

Wire mx_wire(std::uint16_t preference, const std::vector<std::string>& labels) {
  Wire out{static_cast<std::uint8_t>(preference >> 8), static_cast<std::uint8_t>(preference & 0xFF)};
  const Wire name = name_wire(labels);
  out.insert(out.end(), name.begin(), name.end());
  return out;
}

TEST(DnsWire, MxPreferenceAndHost) {
  auto mx = parse_mx(mx_wire(10, {"mx", "example", "com"}));
  ASSERT_TRUE(mx) << mx.error();
  EXPECT_EQ(mx->preference, 10);
  EXPECT_EQ(mx->host, "mx.example.com");
}

TEST(DnsWire, MxPreferenceIsBigEndianSixteenBits) {
  auto mx = parse_mx(mx_wire(0xFFFE, {"a"}));
  ASSERT_TRUE(mx) << mx.error();
  EXPECT_EQ(mx->preference, 0xFFFE);
}

TEST(DnsWire, MxHostIsLowerCased) {
  auto mx = parse_mx(mx_wire(5, {"MX1", "Example", "ORG"}));
  ASSERT_TRUE(mx) << mx.error();
  EXPECT_EQ(mx->host, "mx1.example.org");
}

TEST(DnsWire, NullMxIsEmptyHost) {
  auto mx = parse_mx(Wire{0, 0, 0});
  ASSERT_TRUE(mx) << mx.error();
  EXPECT_EQ(mx->preference, 0);
  EXPECT_EQ(mx->host, "");
}

TEST(DnsWire, MxTooShort) {
  EXPECT_FALSE(parse_mx(Wire{}));
  EXPECT_FALSE(parse_mx(Wire{0, 10}));
}

TEST(DnsWire, MxMissingRootLabel) {
  Wire w = mx_wire(10, {"mx", "example"});
  w.pop_back();
  auto mx = parse_mx(w);
  ASSERT_FALSE(mx);
  EXPECT_NE(mx.error().find("past the end"), std::string::npos) << mx.error();
}

TEST(DnsWire, MxLabelLongerThanRest) {
  auto mx = parse_mx(Wire{0, 10, 5, 'a', 'b', 0});
  ASSERT_FALSE(mx);
  EXPECT_NE(mx.error().find("label runs past"), std::string::npos) << mx.error();
}

TEST(DnsWire, MxCompressionPointerRefused) {
  auto mx = parse_mx(Wire{0, 10, 2, 'm', 'x', 0xC0, 0x0C});
  ASSERT_FALSE(mx);
  EXPECT_NE(mx.error().find("compressed"), std::string::npos) << mx.error();
  EXPECT_FALSE(parse_mx(Wire{0, 10, 0x40, 'x', 0}));  // extended label type 01
}

TEST(DnsWire, MxTrailingOctetsRefused) {
  Wire w = mx_wire(10, {"mx"});
  w.push_back(0);
  auto mx = parse_mx(w);
  ASSERT_FALSE(mx);
  EXPECT_NE(mx.error().find("trailing"), std::string::npos) << mx.error();
}

TEST(DnsWire, LabelOf63OctetsIsTheLimit) {
  const std::string l63(63, 'a');
  auto mx = parse_mx(mx_wire(1, {l63, "test"}));
  ASSERT_TRUE(mx) << mx.error();
  EXPECT_EQ(mx->host, l63 + ".test");
  // 64 has the top bits 01: an extended label type, refused.
  EXPECT_FALSE(parse_mx(mx_wire(1, {std::string(64, 'a'), "test"})));
}

TEST(DnsWire, NameOf255OctetsIsTheLimit) {
  const std::string l63(63, 'a');
  // 3 * (1 + 63) + (1 + 61) + 1 = 255
  std::vector<std::string> labels{l63, l63, l63, std::string(61, 'b')};
  std::size_t offset = 0;
  const Wire ok = name_wire(labels);
  ASSERT_EQ(ok.size(), 255u);
  auto name = read_name(ok, offset);
  ASSERT_TRUE(name) << name.error();
  EXPECT_EQ(offset, 255u);
  labels.back().push_back('b');  // 256
  offset = 0;
  auto too_long = read_name(name_wire(labels), offset);
  ASSERT_FALSE(too_long);
  EXPECT_NE(too_long.error().find("255"), std::string::npos) << too_long.error();
  EXPECT_EQ(offset, 0u);
}

TEST(DnsWire, OddLabelBytesAreEscaped) {
  // A '.' inside a label must not make "a.b" out of one label.
  auto mx = parse_mx(mx_wire(1, {"a.b", "x y", "under_score-dash", std::string("\xff\x01", 2)}));
  ASSERT_TRUE(mx) << mx.error();
  EXPECT_EQ(mx->host, "a\\046b.x\\032y.under_score-dash.\\255\\001");
}

TEST(DnsWire, ReadNameAdvancesOffset) {
  Wire w{9, 9};
  const Wire n = name_wire({"ab", "c"});
  w.insert(w.end(), n.begin(), n.end());
  w.push_back(7);
  std::size_t offset = 2;
  auto name = read_name(w, offset);
  ASSERT_TRUE(name) << name.error();
  EXPECT_EQ(*name, "ab.c");
  EXPECT_EQ(offset, w.size() - 1);
}

TEST(DnsWire, ARecord) {
  auto a = parse_a(Wire{192, 0, 2, 33});
  ASSERT_TRUE(a) << a.error();
  EXPECT_TRUE(a->is_v4());
  EXPECT_EQ(a->to_string(), "192.0.2.33");
  EXPECT_FALSE(parse_a(Wire{192, 0, 2}));
  EXPECT_FALSE(parse_a(Wire{192, 0, 2, 33, 0}));
}

TEST(DnsWire, AaaaRecord) {
  Wire w(16, 0);
  w[0] = 0x20;
  w[1] = 0x01;
  w[2] = 0x0d;
  w[3] = 0xb8;
  w[15] = 1;
  auto aaaa = parse_aaaa(w);
  ASSERT_TRUE(aaaa) << aaaa.error();
  EXPECT_TRUE(aaaa->is_v6());
  EXPECT_EQ(aaaa->to_string(), "2001:db8::1");
  w.pop_back();
  EXPECT_FALSE(parse_aaaa(w));
  w.push_back(1);
  w.push_back(1);
  EXPECT_FALSE(parse_aaaa(w));
}

TEST(DnsWire, TlsaRecord) {
  Wire w{3, 1, 1};
  for (int i = 0; i < 32; ++i) {
    w.push_back(static_cast<std::uint8_t>(i));
  }
  auto tlsa = parse_tlsa(w);
  ASSERT_TRUE(tlsa) << tlsa.error();
  EXPECT_EQ(tlsa->usage, 3);
  EXPECT_EQ(tlsa->selector, 1);
  EXPECT_EQ(tlsa->matching_type, 1);
  ASSERT_EQ(tlsa->data.size(), 32u);
  EXPECT_EQ(tlsa->data.front(), 0);
  EXPECT_EQ(tlsa->data.back(), 31);
}

TEST(DnsWire, TlsaKeepsUnknownFieldValues) {
  // Unusable parameters are the policy's to ignore (RFC 7672 section 2.2), not the parser's.
  auto tlsa = parse_tlsa(Wire{255, 254, 253, 0xAB});
  ASSERT_TRUE(tlsa) << tlsa.error();
  EXPECT_EQ(tlsa->usage, 255);
  EXPECT_EQ(tlsa->selector, 254);
  EXPECT_EQ(tlsa->matching_type, 253);
  EXPECT_EQ(tlsa->data, Wire{0xAB});
}

TEST(DnsWire, TlsaWithoutDataRefused) {
  EXPECT_FALSE(parse_tlsa(Wire{3, 1, 1}));
  EXPECT_FALSE(parse_tlsa(Wire{3}));
  EXPECT_FALSE(parse_tlsa(Wire{}));
}

TEST(DnsWire, TxtStringsAreJoined) {
  // "v=spf1 " + "-all": SPF and DKIM join a record's strings without a space.
  Wire two{7, 'v', '=', 's', 'p', 'f', '1', ' ', 4, '-', 'a', 'l', 'l'};
  auto text = parse_txt(two);
  ASSERT_TRUE(text) << text.error();
  EXPECT_EQ(*text, "v=spf1 -all");
  auto empty_string = parse_txt(Wire{0});
  ASSERT_TRUE(empty_string);
  EXPECT_EQ(*empty_string, "");
  Wire binary{3, 0, '\n', 0xff};
  auto bytes = parse_txt(binary);
  ASSERT_TRUE(bytes);
  EXPECT_EQ(*bytes, std::string("\0\n\xff", 3));
}

TEST(DnsWire, TxtLengthsMustFitExactly) {
  EXPECT_FALSE(parse_txt(Wire{}));
  EXPECT_FALSE(parse_txt(Wire{4, 'a', 'b', 'c'}));
  EXPECT_FALSE(parse_txt(Wire{1, 'a', 2, 'b'}));
  Wire max(256, 'x');
  max[0] = 255;
  auto full = parse_txt(max);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->size(), 255u);
}

TEST(DnsWire, NormalizeName) {
  EXPECT_EQ(normalize_name("Mx.Example.COM."), "mx.example.com");
  EXPECT_EQ(normalize_name("example.com"), "example.com");
  EXPECT_EQ(normalize_name("."), "");
  EXPECT_EQ(normalize_name(""), "");
}

TEST(DnsWire, TlsaOwner) {
  EXPECT_EQ(tlsa_owner(25, "MX.Example.com."), "_25._tcp.mx.example.com");
  EXPECT_EQ(tlsa_owner(465, "mail.test"), "_465._tcp.mail.test");
}

}  // namespace
}  // namespace mxgate::dns::wire
