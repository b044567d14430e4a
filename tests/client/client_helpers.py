"""Constants for client tests: test tenants and the insecure test ring."""

from __future__ import annotations

import einfhe

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
SLOTS = 32
TEST_PARAMS = einfhe.Parameters.insecure_for_tests(2, SLOTS)
