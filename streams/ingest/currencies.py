"""The currency codes a record may carry: ISO 4217 (the schemas' `currency` enums must equal CODES).

A currency becomes a Prometheus label (livepulse_cost_per_*, livepulse_roi_*): any three capital letters would
let one producer create up to 17,576 series per event. So only the alphabetic codes of ISO 4217 list one (current
codes, as published by its maintenance agency, amendments up to 2025: XCG for ANG, ZWG for ZWL) are accepted,
plus the few codes withdrawn since 2021 that CRM records of the attribution windows may still carry (WITHDRAWN).
A new code is added here and in the schemas (tests/ingest/test_currencies.py checks they agree).
"""

from __future__ import annotations

CURRENT = (
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD", "BIF", "BMD", "BND",
    "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY",
    "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD",
    "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN",
    "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN",
    "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD",
    "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX",
    "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB",
    "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW",
    "ZWG",
)
# Withdrawn since 2021, still found in records of the attribution windows: Netherlands Antillean guilder (2025),
# Bulgarian lev (2026, euro), Cuban convertible peso (2021), Croatian kuna (2023, euro), the old leone (2024),
# the Zimbabwe dollar (2024).
WITHDRAWN = ("ANG", "BGN", "CUC", "HRK", "SLL", "ZWL")
CODES = tuple(sorted(CURRENT + WITHDRAWN))
