// The outbound TLS decision table (src/delivery/tls_policy.hpp): every row,
// for dane and dane-only, plus level names and TLSA usability.
#include "delivery/tls_policy.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mxgate::delivery {
namespace {

using Mode = TlsRequirement::Mode;
using dns::Security;
using dns::Status;

const std::string kHost = "mx.example.test";

dns::TlsaRecord record(std::uint8_t usage, std::uint8_t selector, std::uint8_t mtype, std::size_t size = 32) {
  return dns::TlsaRecord{usage, selector, mtype, std::vector<std::uint8_t>(size, 0xAB)};
}

dns::Answer<dns::TlsaRecord> answer(Status status, Security security,
                                    std::vector<dns::TlsaRecord> records = {}, std::string reason = "") {
  return dns::Answer<dns::TlsaRecord>{status, security, std::move(records), std::move(reason)};
}

const dns::Answer<dns::TlsaRecord> kUsable = answer(Status::ok, Security::secure, {record(3, 1, 1)});

void expect_mode(const TlsDecision& d, Mode mode) {
  EXPECT_FALSE(d.defer) << d.reason;
  EXPECT_EQ(d.requirement.mode, mode);
  EXPECT_EQ(d.requirement.host, kHost);
  if (mode != Mode::dane) {
    EXPECT_TRUE(d.requirement.tlsa.empty());
  }
}

void expect_defer(const TlsDecision& d, const std::string& reason) {
  EXPECT_TRUE(d.defer);
  EXPECT_EQ(d.reason, reason);
}

TEST(TlsPolicy, LevelNamesRoundTrip) {
  for (const TlsLevel level : {TlsLevel::none, TlsLevel::may, TlsLevel::encrypt, TlsLevel::dane,
                               TlsLevel::dane_only, TlsLevel::verify}) {
    TlsLevel parsed = TlsLevel::none;
    ASSERT_TRUE(parse_tls_level(to_string(level), parsed)) << to_string(level);
    EXPECT_EQ(parsed, level);
  }
  EXPECT_EQ(to_string(TlsLevel::dane_only), "dane-only");
}

TEST(TlsPolicy, UnknownLevelNames) {
  TlsLevel level = TlsLevel::may;
  for (const char* bad : {"", "None", "MAY", "dane_only", "daneonly", "secure", "fingerprint", "may "})
    EXPECT_FALSE(parse_tls_level(bad, level)) << bad;
  EXPECT_EQ(level, TlsLevel::may);
}

TEST(TlsPolicy, NonDaneLevelsIgnoreDns) {
  for (const Security mx : {Security::secure, Security::insecure, Security::bogus}) {
    const auto bogus_tlsa = answer(Status::failure, Security::bogus);
    for (const auto* tlsa :
         {static_cast<const dns::Answer<dns::TlsaRecord>*>(nullptr), &kUsable, &bogus_tlsa}) {
      expect_mode(decide_tls(TlsLevel::none, mx, kHost, tlsa), Mode::cleartext);
      expect_mode(decide_tls(TlsLevel::may, mx, kHost, tlsa), Mode::opportunistic);
      expect_mode(decide_tls(TlsLevel::encrypt, mx, kHost, tlsa), Mode::encrypt);
      expect_mode(decide_tls(TlsLevel::verify, mx, kHost, tlsa), Mode::verify);
    }
  }
}

// --- dane

TEST(TlsPolicy, DaneBogusMxDefers) {
  expect_defer(decide_tls(TlsLevel::dane, Security::bogus, kHost, &kUsable), "bogus DNSSEC (MX)");
  expect_defer(decide_tls(TlsLevel::dane_only, Security::bogus, kHost, &kUsable), "bogus DNSSEC (MX)");
}

TEST(TlsPolicy, DaneInsecureMxIsOpportunisticWithoutLookingAtTlsa) {
  // RFC 7672 2.2.1: even secure usable TLSA records do not count.
  expect_mode(decide_tls(TlsLevel::dane, Security::insecure, kHost, &kUsable), Mode::opportunistic);
  const auto bogus = answer(Status::failure, Security::bogus);
  expect_mode(decide_tls(TlsLevel::dane, Security::insecure, kHost, &bogus), Mode::opportunistic);
  expect_mode(decide_tls(TlsLevel::dane, Security::insecure, kHost, nullptr), Mode::opportunistic);
}

TEST(TlsPolicy, DaneTlsaBogusDefers) {
  const auto bogus = answer(Status::failure, Security::bogus, {}, "signature expired");
  expect_defer(decide_tls(TlsLevel::dane, Security::secure, kHost, &bogus), "bogus DNSSEC (TLSA)");
  // Bogus wins even when records came back.
  const auto bogus_ok = answer(Status::ok, Security::bogus, {record(3, 1, 1)});
  expect_defer(decide_tls(TlsLevel::dane, Security::secure, kHost, &bogus_ok), "bogus DNSSEC (TLSA)");
}

TEST(TlsPolicy, DaneTlsaFailureDefers) {
  const auto servfail = answer(Status::failure, Security::insecure, {}, "SERVFAIL");
  expect_defer(decide_tls(TlsLevel::dane, Security::secure, kHost, &servfail), "TLSA lookup failed");
  const auto servfail_secure = answer(Status::failure, Security::secure);
  expect_defer(decide_tls(TlsLevel::dane, Security::secure, kHost, &servfail_secure), "TLSA lookup failed");
  expect_defer(decide_tls(TlsLevel::dane, Security::secure, kHost, nullptr), "TLSA lookup failed");
}

TEST(TlsPolicy, DaneTlsaInsecureOrAbsentIsOpportunistic) {
  for (const auto& a :
       {answer(Status::ok, Security::insecure, {record(3, 1, 1)}), answer(Status::nodata, Security::insecure),
        answer(Status::nxdomain, Security::insecure), answer(Status::nodata, Security::secure),
        answer(Status::nxdomain, Security::secure), answer(Status::ok, Security::secure, {})}) {
    expect_mode(decide_tls(TlsLevel::dane, Security::secure, kHost, &a), Mode::opportunistic);
  }
}

TEST(TlsPolicy, DaneSecureUsableRecordsKeepOnlyUsable) {
  const auto mixed = answer(Status::ok, Security::secure,
                            {record(0, 0, 1), record(3, 1, 1), record(1, 1, 1), record(2, 0, 2, 64),
                             record(3, 2, 1), record(3, 0, 3), record(4, 1, 1), record(3, 0, 0, 300)});
  const TlsDecision d = decide_tls(TlsLevel::dane, Security::secure, kHost, &mixed);
  expect_mode(d, Mode::dane);
  ASSERT_EQ(d.requirement.tlsa.size(), 3u);
  EXPECT_EQ(d.requirement.tlsa[0].usage, 3);
  EXPECT_EQ(d.requirement.tlsa[0].matching_type, 1);
  EXPECT_EQ(d.requirement.tlsa[1].usage, 2);
  EXPECT_EQ(d.requirement.tlsa[1].matching_type, 2);
  EXPECT_EQ(d.requirement.tlsa[2].matching_type, 0);
  EXPECT_EQ(d.requirement.tlsa[2].data.size(), 300u);
}

TEST(TlsPolicy, UsabilityOfEachField) {
  const auto usable = [](dns::TlsaRecord r) {
    const auto a = answer(Status::ok, Security::secure, {std::move(r)});
    return decide_tls(TlsLevel::dane, Security::secure, kHost, &a).requirement.mode == Mode::dane;
  };
  // usage: PKIX-TA(0) and PKIX-EE(1) are ignored for SMTP (RFC 7672 3.1.3).
  EXPECT_FALSE(usable(record(0, 1, 1)));
  EXPECT_FALSE(usable(record(1, 1, 1)));
  EXPECT_TRUE(usable(record(2, 1, 1)));
  EXPECT_TRUE(usable(record(3, 1, 1)));
  EXPECT_FALSE(usable(record(4, 1, 1)));
  EXPECT_FALSE(usable(record(255, 1, 1)));
  // selector
  EXPECT_TRUE(usable(record(3, 0, 1)));
  EXPECT_FALSE(usable(record(3, 2, 1)));
  // matching type and digest length
  EXPECT_TRUE(usable(record(3, 1, 0, 91)));
  EXPECT_FALSE(usable(record(3, 1, 0, 0)));
  EXPECT_TRUE(usable(record(3, 1, 1, 32)));
  EXPECT_FALSE(usable(record(3, 1, 1, 31)));
  EXPECT_FALSE(usable(record(3, 1, 1, 33)));
  EXPECT_TRUE(usable(record(3, 1, 2, 64)));
  EXPECT_FALSE(usable(record(3, 1, 2, 32)));
  EXPECT_FALSE(usable(record(3, 1, 3, 32)));
}

TEST(TlsPolicy, DaneSecureButNoneUsableIsEncrypt) {
  // RFC 7672 2.2: TLS stays mandatory, unauthenticated.
  const auto unusable =
      answer(Status::ok, Security::secure, {record(0, 0, 1), record(1, 1, 1), record(3, 1, 1, 20)});
  expect_mode(decide_tls(TlsLevel::dane, Security::secure, kHost, &unusable), Mode::encrypt);
}

// --- dane-only: every fallback becomes a deferral

TEST(TlsPolicy, DaneOnlyInsecureMxDefers) {
  expect_defer(decide_tls(TlsLevel::dane_only, Security::insecure, kHost, &kUsable), "MX not DNSSEC-secure");
}

TEST(TlsPolicy, DaneOnlyTlsaFailuresDeferLikeDane) {
  const auto bogus = answer(Status::failure, Security::bogus);
  expect_defer(decide_tls(TlsLevel::dane_only, Security::secure, kHost, &bogus), "bogus DNSSEC (TLSA)");
  const auto servfail = answer(Status::failure, Security::insecure);
  expect_defer(decide_tls(TlsLevel::dane_only, Security::secure, kHost, &servfail), "TLSA lookup failed");
  expect_defer(decide_tls(TlsLevel::dane_only, Security::secure, kHost, nullptr), "TLSA lookup failed");
}

TEST(TlsPolicy, DaneOnlyNoTlsaDefers) {
  for (const auto& a :
       {answer(Status::ok, Security::insecure, {record(3, 1, 1)}), answer(Status::nodata, Security::insecure),
        answer(Status::nxdomain, Security::secure), answer(Status::nodata, Security::secure),
        answer(Status::ok, Security::secure, {})}) {
    expect_defer(decide_tls(TlsLevel::dane_only, Security::secure, kHost, &a), "no usable TLSA records");
  }
}

TEST(TlsPolicy, DaneOnlyNoneUsableDefers) {
  const auto unusable = answer(Status::ok, Security::secure, {record(1, 1, 1)});
  expect_defer(decide_tls(TlsLevel::dane_only, Security::secure, kHost, &unusable), "no usable TLSA records");
}

TEST(TlsPolicy, DaneOnlyUsableIsDane) {
  const TlsDecision d = decide_tls(TlsLevel::dane_only, Security::secure, kHost, &kUsable);
  expect_mode(d, Mode::dane);
  ASSERT_EQ(d.requirement.tlsa.size(), 1u);
}

}  // namespace
}  // namespace mxgate::delivery
