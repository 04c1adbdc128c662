// The Received trace header (src/smtp/received_header.hpp): RFC 5321 section
// 4.4, protocol names from RFC 3848 / RFC 6531, RFC 5322 date-time in UTC.
#include "smtp/received_header.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <clocale>

namespace mxgate::smtp {
namespace {

using std::chrono::seconds;
using std::chrono::system_clock;

// Thu, 29 Feb 2024 13:05:09 +0000
const system_clock::time_point kLeapDay{seconds{1709211909}};

TEST(ReceivedProtocolName, AllCombinations) {
  EXPECT_EQ(protocol_name(false, false, false), "SMTP");
  EXPECT_EQ(protocol_name(false, true, false), "SMTPS");
  EXPECT_EQ(protocol_name(true, false, false), "ESMTP");
  EXPECT_EQ(protocol_name(true, true, false), "ESMTPS");
  EXPECT_EQ(protocol_name(true, false, true), "UTF8SMTP");
  EXPECT_EQ(protocol_name(true, true, true), "UTF8SMTPS");
}

TEST(ReceivedDate, Rfc5322FormatInUtc) {
  EXPECT_EQ(rfc5322_date(kLeapDay), "Thu, 29 Feb 2024 13:05:09 +0000");
  EXPECT_EQ(rfc5322_date(system_clock::time_point{}), "Thu, 01 Jan 1970 00:00:00 +0000");
  // 2001-09-09 01:46:40 UTC, a Sunday.
  EXPECT_EQ(rfc5322_date(system_clock::time_point{seconds{1000000000}}), "Sun, 09 Sep 2001 01:46:40 +0000");
  // 2023-12-31 23:59:59 UTC, a Sunday; the next second is a Monday in January.
  EXPECT_EQ(rfc5322_date(system_clock::time_point{seconds{1704067199}}), "Sun, 31 Dec 2023 23:59:59 +0000");
  EXPECT_EQ(rfc5322_date(system_clock::time_point{seconds{1704067200}}), "Mon, 01 Jan 2024 00:00:00 +0000");
}

TEST(ReceivedDate, SubSecondPrecisionIsTruncatedNotRounded) {
  EXPECT_EQ(rfc5322_date(kLeapDay + std::chrono::milliseconds{999}), "Thu, 29 Feb 2024 13:05:09 +0000");
}

TEST(ReceivedDate, IndependentOfLocale) {
  const char* old = std::setlocale(LC_TIME, nullptr);
  const std::string saved = old ? old : "C";
  if (std::setlocale(LC_TIME, "de_DE.UTF-8") == nullptr) std::setlocale(LC_TIME, "C.UTF-8");
  EXPECT_EQ(rfc5322_date(kLeapDay), "Thu, 29 Feb 2024 13:05:09 +0000");
  std::setlocale(LC_TIME, saved.c_str());
}

TEST(ReceivedHeader, CleartextEsmtpOneRecipient) {
  const std::string h = received_header(ReceivedFields{
      .helo = "client.example",
      .client_ip = "192.0.2.7",
      .hostname = "mx.example.test",
      .protocol = protocol_name(true, false, false),
      .queue_id = "Q0000001",
      .tls = nullptr,
      .recipient = "rcpt@example.net",
      .when = kLeapDay,
  });
  EXPECT_EQ(h,
            "Received: from client.example ([192.0.2.7])\r\n"
            "\tby mx.example.test (mxgate) with ESMTP id Q0000001\r\n"
            "\tfor <rcpt@example.net>; Thu, 29 Feb 2024 13:05:09 +0000\r\n");
}

TEST(ReceivedHeader, TlsCommentAndNoRecipient) {
  const TlsInfo tls{"TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256};
  const std::string h = received_header(ReceivedFields{
      .helo = "client.example",
      .client_ip = "::1",
      .hostname = "mx.example.test",
      .protocol = protocol_name(true, true, false),
      .queue_id = "Q0000002",
      .tls = &tls,
      .recipient = {},
      .when = kLeapDay,
  });
  EXPECT_EQ(h,
            "Received: from client.example ([::1])\r\n"
            "\tby mx.example.test (mxgate) with ESMTPS id Q0000002\r\n"
            "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
            "\t; Thu, 29 Feb 2024 13:05:09 +0000\r\n");
}

TEST(ReceivedHeader, Utf8SmtpsWithTls12AndDifferingBits) {
  const TlsInfo tls{"TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", 128, 256};
  const std::string h = received_header(ReceivedFields{
      .helo = "[192.0.2.7]",
      .client_ip = "192.0.2.7",
      .hostname = "mx",
      .protocol = protocol_name(true, true, true),
      .queue_id = "ABC",
      .tls = &tls,
      .recipient = "j\xC3\xB6rg@example.net",
      .when = kLeapDay,
  });
  EXPECT_EQ(h,
            "Received: from [192.0.2.7] ([192.0.2.7])\r\n"
            "\tby mx (mxgate) with UTF8SMTPS id ABC\r\n"
            "\t(using TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/256 bits))\r\n"
            "\tfor <j\xC3\xB6rg@example.net>; Thu, 29 Feb 2024 13:05:09 +0000\r\n");
}

TEST(ReceivedHeader, EveryLineEndsInCrlfAndContinuationsAreFolded) {
  const TlsInfo tls{"TLSv1.3", "TLS_AES_128_GCM_SHA256", 128, 128};
  const std::string h = received_header(ReceivedFields{.helo = "h",
                                                       .client_ip = "1.2.3.4",
                                                       .hostname = "mx",
                                                       .protocol = "ESMTPS",
                                                       .queue_id = "Q",
                                                       .tls = &tls,
                                                       .recipient = "r@x",
                                                       .when = kLeapDay});
  ASSERT_GE(h.size(), 2u);
  EXPECT_EQ(h.substr(h.size() - 2), "\r\n");
  for (std::size_t i = 0; i < h.size(); ++i) {
    if (h[i] == '\n') {
      ASSERT_GT(i, 0u);
      EXPECT_EQ(h[i - 1], '\r') << "bare LF at " << i;
      if (i + 1 < h.size()) {
        EXPECT_EQ(h[i + 1], '\t') << "unfolded line at " << i + 1;
      }
    }
    if (h[i] == '\r') {
      ASSERT_LT(i + 1, h.size());
      EXPECT_EQ(h[i + 1], '\n');
    }
  }
}

}  // namespace
}  // namespace mxgate::smtp
