"""Generated corpora for measuring the text scrubber: secrets, personal data, ordinary strings.

Every string here comes from a seeded generator in this file, so the corpora are identical on
every run and on every machine. The token shapes are written from the vendors' documented
formats (prefix, alphabet, length); every body is random, so no string is a real credential,
and every card number, IBAN and SSN is made up but has valid check digits or ranges.

``measure(scrub)`` runs a scrubber over all three corpora once and reports recall (per kind
and per provider), false positives on ordinary strings, and throughput.
"""

from __future__ import annotations

import base64
import json
import random
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = [
    "SEED",
    "WINDOW",
    "Case",
    "Report",
    "leaks",
    "measure",
    "ordinary_strings",
    "pii_cases",
    "secret_cases",
]

#: Every generator derives its random stream from this seed (and its own name).
SEED = 20261123

#: A secret leaks when any window of this many characters of it survives scrubbing.
WINDOW = 8


@dataclass(frozen=True)
class Case:
    """One string handed to the scrubber and the parts of it that must not survive."""

    text: str
    secrets: tuple[str, ...]
    kind: str
    provider: str


# ---------------------------------------------------------------------------------------------
# Alphabets and small helpers
# ---------------------------------------------------------------------------------------------

_DIG = string.digits
_LOW = string.ascii_lowercase
_UP = string.ascii_uppercase
_HEX = "0123456789abcdef"
_HEXU = "0123456789ABCDEF"
_ALPHA = _UP + _LOW
_B62 = _DIG + _UP + _LOW
_B64 = _B62 + "+/"
_B64URL = _B62 + "-_"
_B36 = _DIG + _LOW
_UPNUM = _UP + _DIG
_BASE32 = _UP + "234567"
_BECH32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
_AZURE = _B62 + "_.~-"

Rng: TypeAlias = random.Random
Maker: TypeAlias = Callable[[random.Random], tuple[str, tuple[str, ...]]]
# A token part: a literal, (alphabet, length) or (alphabet, shortest, longest).
Part: TypeAlias = "str | tuple[str, int] | tuple[str, int, int]"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _rng(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def _r(rng: Rng, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _fill(template: str, **values: str) -> str:
    """``str.format`` without brace trouble: templates hold JSON and f-strings."""
    out = template
    for name, value in values.items():
        out = out.replace("{" + name + "}", value)
    return out


def _part(rng: Rng, part: Part) -> str:
    if isinstance(part, str):
        return part
    if len(part) == 2:
        return _r(rng, part[0], part[1])
    alphabet, lo, hi = part
    return _r(rng, alphabet, rng.randint(lo, hi))


def _tok(prefix: str, *parts: Part) -> Maker:
    """A vendor token: a fixed public prefix, then a body that is the secret."""

    def make(rng: Rng) -> tuple[str, tuple[str, ...]]:
        body = "".join(_part(rng, p) for p in parts)
        return prefix + body, (body,)

    return make


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _timestamp(rng: Rng, sep: str = " ") -> str:
    return (
        f"{rng.choice((2025, 2026))}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        f"{sep}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    )


def _case(text: str, secrets: Iterable[str], kind: str, provider: str) -> Case:
    kept = tuple(dict.fromkeys(secrets))
    for secret in kept:
        if len(secret) < WINDOW or secret not in text:
            raise AssertionError(f"bad secret {secret!r} for {provider}: {text!r}")
    return Case(text, kept, kind, provider)


# ---------------------------------------------------------------------------------------------
# Token shapes: one maker per provider or form
# ---------------------------------------------------------------------------------------------


def _generic_b64(rng: Rng) -> tuple[str, tuple[str, ...]]:
    raw = rng.randbytes(rng.choice((16, 20, 32, 40, 47)))
    tok = base64.b64encode(raw).decode()
    return tok, (tok,)


def _azure_storage(rng: Rng) -> tuple[str, tuple[str, ...]]:
    tok = base64.b64encode(rng.randbytes(64)).decode()  # 88 characters, ends with ==
    return tok, (tok,)


def _aws_secret(rng: Rng) -> tuple[str, tuple[str, ...]]:
    tok = _r(rng, _B64, 40)
    return tok, (tok,)


def _azure_ad(rng: Rng) -> tuple[str, tuple[str, ...]]:
    tok = _r(rng, _B62, 3) + "8Q~" + _r(rng, _AZURE, 34)
    return tok, (tok,)


def _discord_bot(rng: Rng) -> tuple[str, tuple[str, ...]]:
    user_id = str(rng.randint(10**16, 10**19 - 1))
    tok = (
        _b64url(user_id.encode())
        + "."
        + _r(rng, _B64URL, 6)
        + "."
        + _r(rng, _B64URL, rng.choice((27, 38)))
    )
    return tok, (tok,)


def _discord_webhook(rng: Rng) -> tuple[str, tuple[str, ...]]:
    body = f"{rng.randint(10**17, 10**18 - 1)}/{_r(rng, _B64URL, 68)}"
    return "https://discord.com/api/webhooks/" + body, (body,)


def _slack_webhook(rng: Rng) -> tuple[str, tuple[str, ...]]:
    body = f"T{_r(rng, _UPNUM, rng.randint(8, 10))}/B{_r(rng, _UPNUM, rng.randint(8, 10))}/"
    body += _r(rng, _B62, 24)
    return "https://hooks.slack.com/services/" + body, (body,)


def _jwt(rng: Rng) -> tuple[str, tuple[str, ...]]:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {
        "sub": _r(rng, _B62, 12),
        "iat": rng.randint(1_700_000_000, 1_800_000_000),
        "scope": "read",
    }
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode()) + "." + _r(rng, _B64URL, 43)
    return header + "." + body, (body,)


def _mapbox(prefix: str) -> Maker:
    def make(rng: Rng) -> tuple[str, tuple[str, ...]]:
        claims = {"u": _r(rng, _LOW, rng.randint(5, 10)), "a": _r(rng, _B36, 25)}
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        body = payload + "." + _r(rng, _B64URL, 22)
        return prefix + body, (body,)

    return make


def _telegram(rng: Rng) -> tuple[str, tuple[str, ...]]:
    tok = f"{rng.randint(10**7, 10**10 - 1)}:AA{_r(rng, _B64URL, 33)}"
    return tok, (tok,)


def _asana(rng: Rng) -> tuple[str, tuple[str, ...]]:
    if rng.random() < 0.5:
        tok = f"1/{rng.randint(10**15, 10**16 - 1)}:{_r(rng, _HEX, 32)}"
    else:
        tok = f"2/{rng.randint(10**15, 10**16 - 1)}/{rng.randint(10**15, 10**16 - 1)}:"
        tok += _r(rng, _HEX, 32)
    return tok, (tok,)


def _mailchimp(rng: Rng) -> tuple[str, tuple[str, ...]]:
    body = _r(rng, _HEX, 32)
    return f"{body}-us{rng.randint(1, 21)}", (body,)


def _terraform(rng: Rng) -> tuple[str, tuple[str, ...]]:
    tok = _r(rng, _B62, 14) + ".atlasv1." + _r(rng, _B62, 67)
    return tok, (tok,)


def _plain(alphabet: str, lo: int, hi: int | None = None) -> Maker:
    return _tok("", (alphabet, lo, hi if hi is not None else lo))


# (provider, maker); each provider gets its own set of free-text cases.
_TOKENS: tuple[tuple[str, Maker], ...] = (
    # --- no vendor prefix ---
    ("generic_hex32", _plain(_HEX, 32)),
    ("generic_hex40", _plain(_HEX, 40)),
    ("generic_hex64", _plain(_HEX, 64)),
    ("generic_hex_upper", _plain(_HEXU, 32, 40)),
    ("generic_base62", _plain(_B62, 20, 64)),
    ("generic_base64", _generic_b64),
    ("generic_base64url", _plain(_B64URL, 24, 64)),
    ("generic_base36", _plain(_B36, 24, 40)),
    ("generic_upper_alnum", _plain(_UPNUM, 20, 32)),
    ("generic_jwt", _jwt),
    ("aws_secret_access_key", _aws_secret),
    ("azure_storage_key", _azure_storage),
    ("azure_ad_client_secret", _azure_ad),
    ("vercel", _plain(_B62, 24)),
    ("cohere", _plain(_B62, 40)),
    ("mistral", _plain(_B62, 32)),
    ("zendesk", _plain(_B62, 40)),
    ("datadog_api_key", _plain(_HEX, 32)),
    ("cloudflare_api_token", _plain(_B64URL, 40)),
    ("cloudflare_global_key", _plain(_HEX, 37)),
    # --- vendor prefixes ---
    ("planetscale_token", _tok("pscale_tkn_", (_B64URL, 43))),
    ("planetscale_password", _tok("pscale_pw_", (_B64URL, 43))),
    ("planetscale_oauth", _tok("pscale_oauth_", (_B64URL, 43))),
    ("huggingface", _tok("hf_", (_ALPHA, 34))),
    ("huggingface_org", _tok("api_org_", (_ALPHA, 34))),
    ("slack_bot", _tok("xoxb-", (_DIG, 10, 13), "-", (_DIG, 10, 13), "-", (_B62, 24))),
    (
        "slack_user",
        _tok("xoxp-", (_DIG, 10, 13), "-", (_DIG, 10, 13), "-", (_DIG, 12, 13), "-", (_HEX, 32)),
    ),
    ("slack_rotating_user", _tok("xoxe.xoxp-1-", (_B62, 140, 160))),
    ("slack_refresh", _tok("xoxe-1-", (_B62, 140, 160))),
    ("slack_app", _tok("xapp-1-A", (_UPNUM, 10), "-", (_DIG, 13), "-", (_HEX, 64))),
    ("slack_webhook", _slack_webhook),
    ("discord_bot", _discord_bot),
    ("discord_webhook", _discord_webhook),
    ("grafana_cloud", _tok("glc_eyJ", (_B64, 60, 120), "==")),
    ("grafana_service_account", _tok("glsa_", (_B62, 32), "_", (_HEX, 8))),
    ("onepassword_service", _tok("ops_eyJ", (_B64URL, 240, 300))),
    ("heroku", _tok("HRKU-AA", (_B64URL, 58))),
    ("sentry_org", _tok("sntrys_eyJ", (_B64URL, 120, 160), "_", (_B64URL, 43))),
    ("sentry_user", _tok("sntryu_", (_HEX, 64))),
    ("shopify_access", _tok("shpat_", (_HEX, 32))),
    ("shopify_shared_secret", _tok("shpss_", (_HEX, 32))),
    ("shopify_custom_app", _tok("shpca_", (_HEX, 32))),
    ("shopify_private_app", _tok("shppa_", (_HEX, 32))),
    ("flutterwave_secret", _tok("FLWSECK-", (_HEX, 32), "-X")),
    ("flutterwave_test", _tok("FLWSECK_TEST-", (_HEX, 32), "-X")),
    ("flutterwave_public", _tok("FLWPUBK-", (_HEX, 32), "-X")),
    ("brevo_api", _tok("xkeysib-", (_HEX, 64), "-", (_B62, 16))),
    ("brevo_smtp", _tok("xsmtpsib-", (_HEX, 64), "-", (_B62, 16))),
    ("prefect_user", _tok("pnu_", (_B62, 36))),
    ("prefect_bot", _tok("pnb_", (_B62, 36))),
    ("readme", _tok("rdme_", (_B36, 70))),
    ("gitlab_pat", _tok("glpat-", (_B64URL, 20))),
    ("gitlab_pat_routable", _tok("glpat-", (_B64URL, 27, 36), ".01.", (_B36, 9))),
    ("gitlab_oauth_secret", _tok("gloas-", (_HEX, 64))),
    ("gitlab_ci_build", _tok("glcbt-", (_HEX, 2, 5), "_", (_B64URL, 20))),
    ("gitlab_feed", _tok("glft-", (_B64URL, 20))),
    ("gitlab_deploy", _tok("gldt-", (_B64URL, 20))),
    ("gitlab_runner", _tok("glrt-", (_B64URL, 20))),
    ("gitlab_trigger", _tok("glptt-", (_HEX, 40))),
    ("gitlab_incoming_mail", _tok("glimt-", (_B36, 25))),
    ("gitlab_agent", _tok("glagent-", (_B64URL, 50))),
    ("gitlab_scim", _tok("glsoat-", (_B64URL, 20))),
    ("posthog_personal", _tok("phx_", (_B62, 47))),
    ("posthog_project_secret", _tok("phs_", (_B62, 43))),
    ("posthog_oauth", _tok("pha_", (_B62, 43))),
    ("github_classic", _tok("ghp_", (_B62, 36))),
    ("github_oauth", _tok("gho_", (_B62, 36))),
    ("github_user_to_server", _tok("ghu_", (_B62, 36))),
    ("github_server_to_server", _tok("ghs_", (_B62, 36))),
    ("github_refresh", _tok("ghr_", (_B62, 36))),
    ("github_fine_grained", _tok("github_pat_", (_B62, 22), "_", (_B62, 59))),
    ("openai_legacy", _tok("sk-", (_B62, 20), "T3BlbkFJ", (_B62, 20))),
    ("openai_project", _tok("sk-proj-", (_B64URL, 150, 160))),
    ("openai_service_account", _tok("sk-svcacct-", (_B64URL, 150, 160))),
    ("anthropic", _tok("sk-ant-api03-", (_B64URL, 93), "AA")),
    ("anthropic_admin", _tok("sk-ant-admin01-", (_B64URL, 93), "AA")),
    ("stripe_secret", _tok("sk_live_", "51", (_B62, 97))),
    ("stripe_restricted", _tok("rk_live_", "51", (_B62, 97))),
    ("stripe_publishable", _tok("pk_live_", "51", (_B62, 97))),
    ("stripe_webhook", _tok("whsec_", (_B62, 32))),
    ("aws_access_key_id", _tok("AKIA", (_BASE32, 16))),
    ("aws_sts_key_id", _tok("ASIA", (_BASE32, 16))),
    ("google_api_key", _tok("AIza", (_B64URL, 35))),
    ("google_oauth_secret", _tok("GOCSPX-", (_B64URL, 28))),
    ("google_access_token", _tok("ya29.a0", (_B64URL, 150, 200))),
    ("npm", _tok("npm_", (_B62, 36))),
    ("pypi", _tok("pypi-AgEIcHlwaS5vcmc", (_B64URL, 60, 160))),
    ("twilio_api_key", _tok("SK", (_HEX, 32))),
    ("twilio_account_sid", _tok("AC", (_HEX, 32))),
    ("sendgrid", _tok("SG.", (_B64URL, 22), ".", (_B64URL, 43))),
    ("mailgun", _tok("key-", (_HEX, 32))),
    ("mailchimp", _mailchimp),
    ("digitalocean_pat", _tok("dop_v1_", (_HEX, 64))),
    ("digitalocean_oauth", _tok("doo_v1_", (_HEX, 64))),
    ("digitalocean_refresh", _tok("dor_v1_", (_HEX, 64))),
    ("doppler_personal", _tok("dp.pt.", (_B62, 43))),
    ("doppler_service", _tok("dp.st.", (_B62, 43))),
    ("linear", _tok("lin_api_", (_B62, 40))),
    ("notion_legacy", _tok("secret_", (_B62, 43))),
    ("notion", _tok("ntn_", (_DIG, 11), (_B62, 35))),
    ("atlassian", _tok("ATATT3xFfGF0", (_B64URL, 170, 190), "=", (_HEXU, 8))),
    ("databricks", _tok("dapi", (_HEX, 32))),
    ("vault_service", _tok("hvs.", (_B64URL, 90, 100))),
    ("vault_batch", _tok("hvb.", (_B64URL, 130, 140))),
    ("terraform_cloud", _terraform),
    ("pulumi", _tok("pul-", (_HEX, 40))),
    ("flyio", _tok("fo1_", (_B64URL, 43))),
    ("netlify", _tok("nfp_", (_B62, 36))),
    ("supabase_pat", _tok("sbp_", (_HEX, 40))),
    ("supabase_secret", _tok("sb_secret_", (_B64URL, 31))),
    ("cloudflare_origin_ca", _tok("v1.0-", (_HEX, 24), "-", (_HEX, 146))),
    ("asana", _asana),
    ("dropbox", _tok("sl.", (_B64URL, 135))),
    ("figma", _tok("figd_", (_B64URL, 40))),
    ("square_access", _tok("sq0atp-", (_B64URL, 22))),
    ("square_secret", _tok("sq0csp-", (_B64URL, 43))),
    ("square_production", _tok("EAAA", (_B64URL, 60))),
    ("mapbox_public", _mapbox("pk.")),
    ("mapbox_secret", _mapbox("sk.")),
    ("newrelic_user", _tok("NRAK-", (_UPNUM, 27))),
    ("newrelic_insert", _tok("NRII-", (_B64URL, 32))),
    ("newrelic_browser", _tok("NRJS-", (_HEX, 19))),
    ("okta", _tok("00", (_B64URL, 40))),
    ("age", _tok("AGE-SECRET-KEY-1", (_BECH32, 58))),
    ("telegram_bot", _telegram),
    ("groq", _tok("gsk_", (_B62, 52))),
    ("replicate", _tok("r8_", (_B62, 37))),
    ("perplexity", _tok("pplx-", (_B62, 48))),
    ("xai", _tok("xai-", (_B62, 80))),
    ("openrouter", _tok("sk-or-v1-", (_HEX, 64))),
    ("langsmith", _tok("lsv2_pt_", (_HEX, 32), "_", (_HEX, 10))),
    ("pinecone", _tok("pcsk_", (_B62, 5, 6), "_", (_B62, 60, 64))),
    ("jina", _tok("jina_", (_B62, 60))),
    ("tavily", _tok("tvly-", (_B62, 32))),
    ("firecrawl", _tok("fc-", (_HEX, 32))),
    ("voyage", _tok("pa-", (_B64URL, 43))),
    ("airtable", _tok("pat", (_B62, 14), ".", (_HEX, 64))),
    ("contentful", _tok("CFPAT-", (_B64URL, 43))),
    ("clojars", _tok("CLOJARS_", (_HEX, 60))),
    ("rubygems", _tok("rubygems_", (_HEX, 48))),
    ("dockerhub_pat", _tok("dckr_pat_", (_B64URL, 27))),
    ("dockerhub_org", _tok("dckr_oat_", (_B64URL, 32))),
    ("postman", _tok("PMAK-", (_HEX, 24), "-", (_HEX, 34))),
    ("typeform", _tok("tfp_", (_B64URL, 44), "_", (_B62, 14))),
    ("frameio", _tok("fio-u-", (_B64URL, 64))),
    ("duffel_test", _tok("duffel_test_", (_B64URL, 43))),
    ("duffel_live", _tok("duffel_live_", (_B64URL, 43))),
    ("easypost", _tok("EZAK", (_B62, 54))),
    ("easypost_test", _tok("EZTK", (_B62, 54))),
    ("shippo", _tok("shippo_live_", (_HEX, 40))),
    ("adafruit", _tok("aio_", (_B62, 28))),
    ("alibaba", _tok("LTAI", (_B62, 20))),
    ("tailscale_api", _tok("tskey-api-", (_B62, 17), "-", (_B62, 33))),
    ("tailscale_auth", _tok("tskey-auth-", (_B62, 17), "-", (_B62, 33))),
    ("buildkite", _tok("bkua_", (_HEX, 40))),
    ("circleci", _tok("CCIPAT_", (_B62, 22), "_", (_HEX, 40))),
    ("scalingo", _tok("tk-us-", (_B64URL, 48))),
    ("sumologic_access_id", _tok("su", (_B62, 12))),
    ("yandex_oauth", _tok("y0_", (_B64URL, 55))),
    ("yandex_api_key", _tok("AQVN", (_B64URL, 35, 38))),
    ("yandex_static", _tok("YC", (_B64URL, 38))),
    ("infracost", _tok("ico-", (_B62, 32))),
    ("sourcegraph", _tok("sgp_", (_HEX, 16), "_", (_HEX, 40))),
    ("sourcegraph_legacy", _tok("sgp_", (_HEX, 40))),
    ("jfrog_api_key", _tok("AKCp", (_B62, 69))),
    ("jfrog_reference", _tok("cmVmdGtuOjAxOj", (_B62, 50))),
    ("bitbucket_app_password", _tok("ATBB", (_B62, 32))),
    ("render", _tok("rnd_", (_B62, 32))),
    ("neon", _tok("napi_", (_B36, 64))),
    ("deno_deploy", _tok("ddp_", (_B62, 36))),
    ("cerebras", _tok("csk-", (_B36, 48))),
    ("fireworks", _tok("fw_", (_B62, 24))),
    ("elevenlabs", _tok("sk_", (_HEX, 48))),
    (
        "launchdarkly",
        _tok("api-", (_HEX, 8), "-", (_HEX, 4), "-", (_HEX, 4), "-", (_HEX, 4), "-", (_HEX, 12)),
    ),
)

# Sentence shapes a bare token shows up in, with no key name near it.
_FREE_SHAPES: tuple[str, ...] = (
    "{tok}",
    '"{tok}"',
    "error while indexing: {tok} (status 401)",
    "retrying with {tok}",
    "auth failed for {tok}",
    "{ts} WARN upstream rejected {tok}",
    "{ts} ERROR [worker-{n}] call to {svc} failed: 401 Unauthorized ({tok})",
    'Traceback (most recent call last):\n  File "main.py", line {n}, in <module>\n'
    "    run('{tok}')\nRuntimeError: upstream refused {tok}",
    '{"level": "error", "event": "upstream rejected", "value": "{tok}"}',
    '["{tok}", 401, "Unauthorized"]',
    "ValueError: could not parse '{tok}'",
    "KeyError: '{tok}'",
    "cache miss for {tok}",
    "{tok} was revoked",
    "using {tok} for {svc}",
    "<{tok}>",
    "({tok})",
    "{svc} said {tok} is not valid",
    "copied {tok} from the dashboard",
    "{svc}: 403 Forbidden for {tok}",
    "args=('{tok}',) kwargs={}",
    "[{ts}] {tok}",
    "step 1: {tok}\nstep 2: done",
    "{ts},{n},{tok},rejected",
    "unexpected value {tok}, expected one of: a, b",
)

_SERVICES = (
    "qdrant",
    "voyage",
    "the embedding provider",
    "the vector store",
    "upstream",
    "api.example.com",
    "registry",
    "webhook relay",
)


def _free_token_cases() -> list[Case]:
    rng = _rng("free")
    cases: list[Case] = []
    for provider, make in _TOKENS:
        count = 10 if provider.startswith("generic_") else 7
        for shape in rng.sample(_FREE_SHAPES, count):
            tok, secrets = make(rng)
            text = _fill(
                shape,
                tok=tok,
                ts=_timestamp(rng),
                n=str(rng.randint(2, 480)),
                svc=rng.choice(_SERVICES),
            )
            cases.append(_case(text, secrets, "token_free", provider))
    return cases


# ---------------------------------------------------------------------------------------------
# Keyed forms: a key name sits next to the value
# ---------------------------------------------------------------------------------------------

_ENV_NAMES = _words(
    """
    API_KEY ACCESS_TOKEN AUTH_TOKEN SECRET_KEY CLIENT_SECRET GITHUB_TOKEN OPENAI_API_KEY
    HF_TOKEN SLACK_BOT_TOKEN STRIPE_SECRET_KEY PRIVATE_TOKEN VOYAGE_API_KEY QDRANT_API_KEY
    NPM_TOKEN SENTRY_AUTH_TOKEN
    """
)
_SNAKE_NAMES = _words(
    """
    api_key token access_token secret client_secret auth_token apiKey secret_key private_token
    accessToken
    """
)

_KEYED_FORMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dotenv", ("{ENV}={tok}", '{ENV}="{tok}"', "# production\n{ENV}={tok}\nLOG_LEVEL=info")),
    ("export", ("export {ENV}={tok}", "export {ENV}='{tok}'", '$ export {ENV}="{tok}" && make')),
    ("yaml", ("{snake}: {tok}", 'credentials:\n  {snake}: "{tok}"\n  region: eu-west-1')),
    ("json", ('{"{snake}": "{tok}"}', '{"auth": {"{snake}": "{tok}", "retries": 3}}')),
    (
        "header_bearer",
        (
            "Authorization: Bearer {tok}",
            "authorization: bearer {tok}",
            "-H 'Authorization: Bearer {tok}'",
        ),
    ),
    ("header_token", ("Authorization: token {tok}", "Authorization: Token {tok}")),
    (
        "header_api_key",
        ("X-Api-Key: {tok}", "x-api-key: {tok}", "X-Auth-Token: {tok}", "Private-Token: {tok}"),
    ),
    (
        "query_string",
        (
            "GET https://api.example.com/v1/items?access_token={tok}&page=2",
            "https://api.example.com/v2/search?q=fox&api_key={tok}",
            "POST /oauth/token?client_id=cli&client_secret={tok} HTTP/1.1",
            "https://hooks.example.com/in?token={tok}",
        ),
    ),
    (
        "python_kwarg",
        ('Client(api_key="{tok}")', "connect(token='{tok}', timeout=5.0)", "login(secret='{tok}')"),
    ),
    ("toml", ('{snake} = "{tok}"', '[auth]\n{snake} = "{tok}"')),
    ("ini", ("{snake} = {tok}", "[default]\naws_secret_access_key = {tok}")),
    ("cli_flag", ("--token {tok}", "--api-key={tok}", "deploy --token={tok} --yes")),
    ("docker_env", ("docker run -e {ENV}={tok} app:latest", "-e {ENV}={tok}")),
    ("actions_env", ("env:\n  {ENV}: {tok}\n  CI: true", "env:\n  {ENV}: '{tok}'")),
)


def _uuid4(rng: Rng) -> str:
    h = _r(rng, _HEX, 32)
    variant = rng.choice("89ab")
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


# Values without a vendor shape that only their key name gives away.
_KEYED_VENDORS: tuple[tuple[str, tuple[str, ...], Callable[[Rng], str]], ...] = (
    ("snyk", ("SNYK_TOKEN", "snyk_token"), _uuid4),
    ("heroku_legacy", ("HEROKU_API_KEY", "heroku_api_key"), _uuid4),
    ("datadog_app_key", ("DD_APP_KEY", "datadog_app_key"), lambda rng: _r(rng, _HEX, 40)),
    ("datadog_api_key_keyed", ("DD_API_KEY", "datadog_api_key"), lambda rng: _r(rng, _HEX, 32)),
    ("twilio_auth_token", ("TWILIO_AUTH_TOKEN", "auth_token"), lambda rng: _r(rng, _HEX, 32)),
    ("wandb", ("WANDB_API_KEY", "wandb_api_key"), lambda rng: _r(rng, _HEX, 40)),
    ("algolia", ("ALGOLIA_API_KEY", "algolia_api_key"), lambda rng: _r(rng, _HEX, 32)),
    ("sumologic_access_key", ("SUMO_ACCESS_KEY", "access_key"), lambda rng: _r(rng, _B62, 64)),
    ("short_random", ("SECRET_KEY", "secret"), lambda rng: _r(rng, _B62, 16)),
    (
        "django_secret",
        ("DJANGO_SECRET_KEY", "SECRET_KEY"),
        lambda rng: _r(rng, _B62 + "!@#%^*(-_=+)", 50),
    ),
)


_VENDOR_KEYED_SHAPES = (
    "{ENV}={tok}",
    "export {ENV}={tok}",
    '{snake}: "{tok}"',
    '{"{snake}": "{tok}"}',
    "{ENV}: {tok}",
    '{snake} = "{tok}"',
    "docker run -e {ENV}={tok} app",
    "{snake}={tok}",
)


def _keyed_cases() -> list[Case]:
    rng = _rng("keyed")
    cases: list[Case] = []
    for form, templates in _KEYED_FORMS:
        for i in range(10):
            _, make = rng.choice(_TOKENS)
            tok, secrets = make(rng)
            text = _fill(
                templates[i % len(templates)],
                ENV=rng.choice(_ENV_NAMES),
                snake=rng.choice(_SNAKE_NAMES),
                tok=tok,
            )
            cases.append(_case(text, secrets, "token_keyed", f"keyed_{form}"))
    for provider, (env, snake), make_value in _KEYED_VENDORS:
        for template in rng.sample(_VENDOR_KEYED_SHAPES, 6):
            value = make_value(rng)
            text = _fill(template, ENV=env, snake=snake, tok=value)
            cases.append(_case(text, (value,), "token_keyed", provider))
    return cases


# ---------------------------------------------------------------------------------------------
# Passwords in their usual syntaxes
# ---------------------------------------------------------------------------------------------

_PW_WORDS = _words(
    """
    secret password dragon sunshine winter summer monkey shadow falcon harbor orange copper
    meadow thunder velvet quartz marble rocket cactus walrus lantern pepper tundra saffron
    """
)
_PUNCT = "!#$%*+-.=?@^_~"
_LEET = str.maketrans({"e": "3", "o": "0", "i": "1", "a": "4", "s": "$"})


def _password(rng: Rng, punct: str = _PUNCT) -> str:
    style = rng.randrange(4)
    if style == 0:  # S3cr3t!Passw0rd
        a, b = rng.sample(_PW_WORDS, 2)
        word = a.capitalize() + rng.choice(punct) + b.capitalize()
        pw = "".join(
            ch.translate(_LEET)
            if rng.random() < 0.5 and ch.translate(_LEET) in _B62 + punct
            else ch
            for ch in word
        )
        pw += str(rng.randint(0, 99))
    elif style == 1:  # hunter2hunter2
        half = rng.choice(_PW_WORDS) + str(rng.randint(1, 9))
        pw = half * 2
    elif style == 2:  # correct-horse-battery-staple
        sep = rng.choice("-_." if "." in punct else "-_")
        pw = sep.join(rng.sample(_PW_WORDS, rng.randint(3, 4)))
    else:  # random with punctuation
        n = rng.randint(10, 24)
        pw = rng.choice(_ALPHA) + _r(rng, _B62 + punct * 2, n - 3)
        pw += rng.choice(punct) + rng.choice(_DIG)
    return pw


def _activation_key(rng: Rng) -> str:
    return "-".join(_r(rng, _UPNUM, 5) for _ in range(5))


_PASSWORD_FORMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("id_pw_pair", ("ID:master,PW:{pw}", "id:admin, pw:{pw}", "ID: root / PW: {pw}")),
    (
        "python_env_fallback",
        (
            'PASSWORD = os.environ.get("PASSWORD") or "{pw}"',
            'db_password = os.getenv("DB_PASSWORD", "{pw}")',
        ),
    ),
    (
        "sql_create_user",
        (
            "CREATE USER app IDENTIFIED BY '{pw}';",
            "create user 'reporter'@'%' identified by '{pw}';",
        ),
    ),
    (
        "sql_alter_user",
        ('ALTER USER postgres IDENTIFIED BY "{pw}";', "ALTER USER app WITH PASSWORD '{pw}';"),
    ),
    (
        "xml_cleartext_password",
        (
            '<add key="ClearTextPassword" value="{pw}"/>',
            '<add key="Password" value="{pw}" />',
            "<password>{pw}</password>",
        ),
    ),
    ("client_srt", ('client_srt = "{pw}"', "client_srt: {pw}")),
    (
        "activation_key",
        ("Activation key : {key}", "Activation Key: {key}", "activation key = {key}"),
    ),
    ("cli_password_space", ("--password {pw}", "mytool sync --user bob --password {pw} --yes")),
    (
        "cli_password_equals",
        ("--password={pw}", "redis-cli --pass={pw} ping", "--db-password={pw}"),
    ),
    ("cli_short_p", ("-p {pw}", "unzip -P {pw} backup.zip")),
    ("mysql_cli", ("mysql -u root -p{pw}", "mysqldump -uadmin -p{pw} shop > dump.sql")),
    (
        "psql_uri",
        (
            'psql "postgresql://app:{pw}@db:5432/app"',
            "psql postgres://reporter:{pw}@db.internal/stats",
        ),
    ),
    ("sshpass", ("sshpass -p {pw} ssh deploy@build-01", "sshpass -p '{pw}' scp dump.sql backup:")),
    (
        "netrc",
        (
            "machine api.example.com login alice password {pw}",
            "machine git.example.org\n  login ci-bot\n  password {pw}",
        ),
    ),
    ("yaml_password", ("password: {pw}", "database:\n  user: app\n  password: {pw}\n  port: 5432")),
    ("yaml_db_pass", ('db_pass: "{pw}"', "  db_pass: '{pw}'")),
    ("dotenv_db_password", ("DB_PASSWORD={pw}", "POSTGRES_PASSWORD={pw}\nPOSTGRES_DB=app")),
    ("pgpassword_env", ("PGPASSWORD={pw} psql -h db -U app", "PGPASSWORD='{pw}' pg_dump shop")),
    (
        "net_use",
        (
            "net use \\\\server\\share {pw} /user:bob",
            "net use Z: \\\\fs01\\data {pw} /user:CORP\\svc",
        ),
    ),
    (
        "docker_env_password",
        ("docker run -e POSTGRES_PASSWORD={pw} postgres:16", "-e MYSQL_ROOT_PASSWORD={pw}"),
    ),
    ("pip_index_url", ("pip install --index-url https://ci:{pw}@pypi.example.com/simple pkg",)),
    ("passwd_prose", ("the password is {pw}", "new password: {pw}", "Password changed to {pw}")),
)


def _k8s_secret(rng: Rng) -> Case:
    pw = base64.b64encode(_password(rng).encode()).decode()
    tok = base64.b64encode(_r(rng, _B62, 32).encode()).decode()
    name = rng.choice(("db-credentials", "app-secrets", "registry-auth", "api-keys"))
    text = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n"
        f"  name: {name}\n  namespace: {rng.choice(('prod', 'staging', 'default'))}\n"
        "type: Opaque\ndata:\n"
        f"  username: YWRtaW4=\n  password: {pw}\n  api-token: {tok}\n"
    )
    return _case(text, (pw, tok), "password_syntax", "k8s_secret")


def _password_cases() -> list[Case]:
    rng = _rng("password")
    cases: list[Case] = []
    for provider, templates in _PASSWORD_FORMS:
        # Inside a URL the password holds only characters that need no escaping.
        punct = "!$*-._~" if provider in {"psql_uri", "pip_index_url"} else _PUNCT
        for i in range(10):
            key = provider == "activation_key"
            value = _activation_key(rng) if key else _password(rng, punct)
            text = _fill(templates[i % len(templates)], pw=value, key=value)
            cases.append(_case(text, (value,), "password_syntax", provider))
    cases.extend(_k8s_secret(rng) for _ in range(10))
    return cases


# ---------------------------------------------------------------------------------------------
# PEM private keys
# ---------------------------------------------------------------------------------------------

# (label, DER prefix, total DER length, line width); the rest of the DER is random bytes.
_PEM_TYPES: tuple[tuple[str, bytes, int, int], ...] = (
    ("RSA PRIVATE KEY", bytes.fromhex("308204a40201000282010100"), 1192, 64),
    (
        "PRIVATE KEY",
        bytes.fromhex("308204be020100300d06092a864886f70d0101010500048204a8"),
        1218,
        64,
    ),
    ("EC PRIVATE KEY", bytes.fromhex("30770201010420"), 121, 64),
    (
        "PRIVATE KEY",
        bytes.fromhex("308187020100301306072a8648ce3d020106082a8648ce3d030107"),
        138,
        64,
    ),
    ("ENCRYPTED PRIVATE KEY", bytes.fromhex("3082051c304e06092a864886f70d01050d3041"), 1312, 64),
    (
        "OPENSSH PRIVATE KEY",
        b"openssh-key-v1\x00\x00\x00\x00\x04none\x00\x00\x00\x04none\x00\x00\x00\x00"
        b"\x00\x00\x00\x01\x00\x00\x003\x00\x00\x00\x0bssh-ed25519",
        400,
        70,
    ),
)


def _pem_lines(rng: Rng) -> tuple[str, list[str]]:
    label, prefix, total, width = rng.choice(_PEM_TYPES)
    body = base64.b64encode(prefix + rng.randbytes(total - len(prefix))).decode()
    return label, [body[i : i + width] for i in range(0, len(body), width)]


def _pem_wrap(rng: Rng, variant: str, label: str, lines: list[str]) -> str:
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    full = [begin, *lines, end]
    if variant == "pem_plain":
        return "\n".join(full)
    if variant == "pem_in_message":
        return "loaded signing material:\n" + "\n".join(full) + "\nhandshake failed"
    if variant == "pem_python_concat":
        inner = "\n".join(f'    "{line}\\n"' for line in full)
        return f"PRIVATE_KEY = (\n{inner}\n)"
    if variant == "pem_js_concat":
        return "const key =\n" + " +\n".join(f'  "{line}\\n"' for line in full) + ";"
    if variant == "pem_go_concat":
        return "var key = " + " +\n\t".join(f'"{line}\\n"' for line in full)
    if variant == "pem_docker_log":
        step = rng.randint(3, 19)
        start = rng.uniform(0.1, 9.0)
        return "\n".join(f"#{step} {start + i * 0.001:.3f} {line}" for i, line in enumerate(full))
    if variant == "pem_timestamp_log":
        ts = _timestamp(rng, "T")
        return "\n".join(f"{ts}.{100 + i:03d}Z  {line}" for i, line in enumerate(full))
    if variant == "pem_star_comment":
        return "/*\n" + "\n".join(f" * {line}" for line in full) + "\n */"
    if variant == "pem_hash_comment":
        return "\n".join(f"# {line}" for line in full)
    if variant == "pem_slash_comment":
        return "\n".join(f"// {line}" for line in full)
    if variant == "pem_json_escaped":
        key = rng.choice(("private_key", "key", "ssh_key", "value"))
        return json.dumps({"type": "service_account", key: "\n".join(full) + "\n"})
    if variant == "pem_truncated":
        cut = rng.randint(2, max(2, len(lines) - 1))
        return "\n".join(full[: cut + 1]) + "\u2026"
    raise ValueError(variant)


_PEM_VARIANTS = _words(
    """
    pem_plain pem_in_message pem_python_concat pem_js_concat pem_go_concat pem_docker_log
    pem_timestamp_log pem_star_comment pem_hash_comment pem_slash_comment pem_json_escaped
    pem_truncated
    """
)


def _pem_cases() -> list[Case]:
    rng = _rng("pem")
    cases: list[Case] = []
    for variant in _PEM_VARIANTS:
        for _ in range(3):
            label, lines = _pem_lines(rng)
            text = _pem_wrap(rng, variant, label, lines)
            secrets = [line for line in lines if len(line) >= WINDOW and line in text]
            cases.append(_case(text, secrets, "pem", variant))
    return cases


# ---------------------------------------------------------------------------------------------
# URLs with credentials
# ---------------------------------------------------------------------------------------------

_URL_HOSTS = (
    ("postgres", "db.internal:5432/app"),
    ("postgresql", "pg-primary.svc.cluster.local:5432/analytics"),
    ("mysql", "mysql.internal:3306/shop"),
    ("redis", "cache:6379/0"),
    ("rediss", "cache.example.net:6380"),
    ("amqp", "rabbitmq:5672/%2F"),
    ("mongodb", "mongo-0.mongo:27017/admin"),
    ("mongodb+srv", "cluster0.ab1cd.mongodb.net/app?retryWrites=true&w=majority"),
    ("https", "git.example.com/org/repo.git"),
    ("ftp", "files.example.org/upload"),
    ("smtp", "mail.example.com:587"),
    ("clickhouse", "ch.internal:9000/default"),
)
_URL_USERS_PLAIN = _words("admin app root user ci bob")
_URL_USERS_SECRET = ("svc_indexer_ro", "alice.wong", "deploy-bot-7", "replicator01")
_URL_SHAPES = (
    "{url}",
    "connecting to {url}",
    "sqlalchemy.exc.OperationalError: could not connect to {url}",
    'engine = create_engine("{url}")',
    "DATABASE_URL={url}",
    "Error connecting to {url}: Connection refused",
    "[{ts}] broker {url} unreachable",
)


def _url_password(rng: Rng, form: str) -> str:
    base = _password(rng, "!$*-._~")
    specials = {"url_pw_at": "@", "url_pw_hash": "#", "url_pw_colon": ":", "url_pw_mixed": "@#:"}
    if form in specials:
        for ch in specials[form]:
            at = rng.randint(1, len(base) - 1)
            base = base[:at] + ch + base[at:]
    elif form == "url_pw_percent":
        at = rng.randint(1, len(base) - 1)
        base = base[:at] + rng.choice(("%40", "%23", "%3A", "%2F")) + base[at:]
    return base


_URL_FORMS = _words(
    """
    url_pw_at url_pw_hash url_pw_colon url_pw_mixed url_pw_plain url_pw_percent url_empty_user
    url_user_named
    """
)


def _url_cases() -> list[Case]:
    rng = _rng("url")
    cases: list[Case] = []
    for form in _URL_FORMS:
        for _ in range(8):
            scheme, rest = rng.choice(_URL_HOSTS)
            pw = _url_password(
                rng, rng.choice(_URL_FORMS[:4]) if form == "url_empty_user" else form
            )
            secrets = [pw]
            if form == "url_empty_user":
                url = f"redis://:{pw}@cache:6379/{rng.randint(0, 15)}"
            else:
                if form == "url_user_named":
                    user = rng.choice(_URL_USERS_SECRET)
                    secrets.append(user)
                else:
                    user = rng.choice(_URL_USERS_PLAIN)
                url = f"{scheme}://{user}:{pw}@{rest}"
            text = _fill(rng.choice(_URL_SHAPES), url=url, ts=_timestamp(rng))
            cases.append(_case(text, secrets, "url_password", form))
    return cases


def secret_cases() -> list[Case]:
    """Secrets in free text: vendor and bare tokens, keyed values, passwords, PEM, URLs."""
    return [
        *_free_token_cases(),
        *_keyed_cases(),
        *_password_cases(),
        *_pem_cases(),
        *_url_cases(),
    ]


# ---------------------------------------------------------------------------------------------
# Personal data
# ---------------------------------------------------------------------------------------------


def _digits(rng: Rng, n: int, first: str = "123456789") -> str:
    return rng.choice(first) + _r(rng, _DIG, n - 1)


def _phone_forms(rng: Rng) -> list[tuple[str, str]]:
    """(provider, number) for one round of every phone format."""
    area = rng.choice(("415", "212", "206", "312", "617", "303", "512", "646"))
    line = f"01{rng.randint(0, 99):02d}"  # 555-0100..0199 are the fictional US numbers
    uk_land = f"7946 0{rng.randint(0, 999):03d}"
    uk_mob = f"7700 900{rng.randint(0, 999):03d}"
    de_city, de_num = rng.choice((("30", 8), ("40", 8), ("89", 8), ("221", 7), ("69", 8)))
    de_local = _digits(rng, de_num)
    de_mobile = rng.choice(("151", "160", "170", "176"))
    fr = " ".join(f"{rng.randint(0, 99):02d}" for _ in range(4))
    fr_lead = rng.choice("1234567")
    jp_a, jp_b = _digits(rng, 4), _digits(rng, 4, _DIG)
    in_a, in_b = rng.choice("6789") + _r(rng, _DIG, 4), _r(rng, _DIG, 5)
    au_a, au_b = _digits(rng, 4), _r(rng, _DIG, 4)
    br_a, br_b = "9" + _r(rng, _DIG, 4), _r(rng, _DIG, 4)
    return [
        ("us_phone_intl", f"+1 ({area}) 555-{line}"),
        ("us_phone_intl", f"+1 {area}-555-{line}"),
        ("e164_phone", f"+1{area}555{line}"),
        ("e164_phone", f"+4420{uk_land.replace(' ', '')}"),
        ("us_phone_national", f"({area}) 555-{line}"),
        ("us_phone_national", f"{area}-555-{line}"),
        ("us_phone_national", f"{area}.555.{line}"),
        ("uk_phone_intl", f"+44 20 {uk_land}"),
        ("uk_phone_intl", f"+44 {uk_mob}"),
        ("uk_phone_national", f"020 {uk_land}"),
        ("uk_phone_national", f"0{uk_mob}"),
        ("de_phone", f"+49 {de_city} {de_local}"),
        ("de_phone", f"0{de_city} {de_local}"),
        ("de_phone", f"+49 {de_mobile} {_digits(rng, 8)}"),
        ("de_phone", f"+49 (0){de_city} {de_local}"),
        ("fr_phone", f"+33 6 {fr}"),
        ("fr_phone", f"06 {fr}"),
        ("fr_phone", f"+33 {fr_lead} {fr}"),
        ("jp_phone", f"+81 3-{jp_a}-{jp_b}"),
        ("jp_phone", f"03-{jp_a}-{jp_b}"),
        ("jp_phone", f"+81 90-{jp_a}-{jp_b}"),
        ("in_phone", f"+91 {in_a} {in_b}"),
        ("au_phone", f"+61 2 {au_a} {au_b}"),
        ("au_phone", f"(02) {au_a} {au_b}"),
        ("au_phone", f"+61 4{_r(rng, _DIG, 2)} {_r(rng, _DIG, 3)} {_r(rng, _DIG, 3)}"),
        ("br_phone", f"+55 11 {br_a}-{br_b}"),
        ("br_phone", f"(11) {br_a}-{br_b}"),
        (
            "es_phone",
            f"+34 6{_r(rng, _DIG, 2)} {_r(rng, _DIG, 2)} {_r(rng, _DIG, 2)} {_r(rng, _DIG, 2)}",
        ),
        ("it_phone", f"+39 06 {_r(rng, _DIG, 4)} {_r(rng, _DIG, 4)}"),
        ("nl_phone", f"+31 6 {_digits(rng, 8)}"),
        ("ch_phone", f"+41 44 {_r(rng, _DIG, 3)} {_r(rng, _DIG, 2)} {_r(rng, _DIG, 2)}"),
    ]


_PHONE_SHAPES = (
    "call me at {v}",
    "phone: {v}",
    "SMS to {v} failed",
    "{v}",
    "Tel. {v}",
    "user entered {v} in the contact form",
    "callback number {v} unreachable",
    "WhatsApp: {v}",
    "reach the on-call engineer on {v} after 6pm",
)


def _luhn_check_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these sit left of the check digit at odd distance
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _card_number(rng: Rng, brand: str) -> str:
    if brand == "visa":
        prefix, length = "4", 16
    elif brand == "mastercard":
        prefix = str(rng.randint(51, 55)) if rng.random() < 0.6 else str(rng.randint(2221, 2720))
        length = 16
    elif brand == "amex":
        prefix, length = rng.choice(("34", "37")), 15
    elif brand == "discover":
        prefix, length = rng.choice(("6011", str(rng.randint(644, 649)), "65")), 16
    elif brand == "jcb":
        prefix, length = str(rng.randint(3528, 3589)), 16
    else:  # diners
        prefix, length = rng.choice(("36", str(rng.randint(300, 305)), "38")), 14
    partial = prefix + _r(rng, _DIG, length - len(prefix) - 1)
    return partial + _luhn_check_digit(partial)


def _group_card(number: str, sep: str) -> str:
    sizes = {15: (4, 6, 5), 14: (4, 6, 4)}.get(len(number), (4, 4, 4, 4))
    parts, at = [], 0
    for size in sizes:
        parts.append(number[at : at + size])
        at += size
    return sep.join(parts)


_CARD_SHAPES = (
    "card {v} declined",
    "charged {v} for $49.00",
    "payment method: {v}",
    "{v}",
    "refund to {v} pending",
    "the number {v} failed 3-D Secure",
    "CC: {v} exp 08/29",
)

# (country, total length, BBAN layout: count + n digits / a letters / c alphanumerics)
_IBAN_LAYOUTS: tuple[tuple[str, int, str], ...] = (
    ("DE", 22, "8n10n"),
    ("GB", 22, "4a6n8n"),
    ("FR", 27, "5n5n11c2n"),
    ("NL", 18, "4a10n"),
    ("ES", 24, "4n4n2n10n"),
    ("IT", 27, "1a5n5n12c"),
    ("CH", 21, "5n12c"),
    ("BE", 16, "3n7n2n"),
    ("PL", 28, "8n16n"),
    ("AT", 20, "5n11n"),
    ("IE", 22, "4a6n8n"),
    ("PT", 25, "4n4n11n2n"),
    ("SE", 24, "3n16n1n"),
    ("DK", 18, "4n9n1n"),
    ("NO", 15, "4n6n1n"),
    ("FI", 18, "6n7n1n"),
    ("LU", 20, "3n13c"),
    ("CZ", 24, "4n6n10n"),
    ("HU", 28, "3n4n1n15n1n"),
    ("GR", 27, "3n4n16c"),
    ("RO", 24, "4a16c"),
    ("HR", 21, "7n10n"),
    ("SI", 19, "5n8n2n"),
    ("LT", 20, "5n11n"),
    ("EE", 20, "2n2n11n1n"),
    ("MT", 31, "4a5n18c"),
    ("BG", 22, "4a4n2n8c"),
    ("SA", 24, "2n18c"),
    ("AE", 23, "3n16n"),
    ("TR", 26, "5n1n16c"),
)


def _iban_numeric(text: str) -> int:
    return int("".join(str(int(ch, 36)) for ch in text))


def _iban(rng: Rng, country: str, layout: str) -> str:
    bban, count = [], ""
    for ch in layout:
        if ch.isdigit():
            count += ch
            continue
        alphabet = {"n": _DIG, "a": _UP, "c": _UPNUM}[ch]
        bban.append(_r(rng, alphabet, int(count)))
        count = ""
    body = "".join(bban)
    check = 98 - _iban_numeric(body + country + "00") % 97
    return f"{country}{check:02d}{body}"


_IBAN_SHAPES = (
    "IBAN: {v}",
    "transfer to {v}",
    "please pay into {v}",
    "{v}",
    "Kontonummer {v}",
    "refund sent to {v} yesterday",
    "payout account {v} rejected by the bank",
)


def _ssn(rng: Rng) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


_SSN_SHAPES_LABELLED = (
    "SSN: {v}",
    "ssn={v}",
    "social security number {v} on file",
    "Applicant SSN {v} verified",
)
_SSN_SHAPES_BARE: tuple[str, ...] = (
    "{v}",
    "applicant {v} verified",
    "id {v} rejected by the bureau",
    "ref {v}",
)

_US_STREETS = _words(
    """
    Amphitheatre Maple Oak Cedar Washington Sunset Willow Highland Madison Jefferson Lincoln
    Franklin Meadow Evergreen Lakeview
    """
)
_US_TYPES = _words("Street Avenue Road Boulevard Drive Lane Way Court Parkway")
_US_CITIES = (
    ("Mountain View", "CA", "940"),
    ("Springfield", "IL", "627"),
    ("Austin", "TX", "787"),
    ("Portland", "OR", "972"),
    ("Denver", "CO", "802"),
    ("Boston", "MA", "021"),
    ("Seattle", "WA", "981"),
    ("Raleigh", "NC", "276"),
)
_UK_STREETS = _words("Baker High Church Station Victoria Mill Queen Kingsley")
_UK_TYPES = _words("Street Road Lane Avenue Close Gardens Crescent")
_UK_CITIES: tuple[tuple[str, str], ...] = (
    ("London", "NW1"),
    ("Manchester", "M1"),
    ("Leeds", "LS1"),
    ("Bristol", "BS1"),
)
_UK_CITIES += (("Edinburgh", "EH1"), ("Cardiff", "CF10"))
_DE_STREETS = _words("Haupt Bahnhof Schiller Goethe Garten Linden Kirch Mozart")
_DE_TYPES = _words("straße str. weg allee gasse platz")
_DE_CITIES: tuple[tuple[str, str], ...] = (
    ("Berlin", "10"),
    ("Hamburg", "20"),
    ("München", "80"),
    ("Köln", "50"),
)
_DE_CITIES += (("Frankfurt am Main", "60"), ("Leipzig", "04"), ("Stuttgart", "70"))
_FR_STREETS: tuple[str, ...] = (
    "rue de la Paix",
    "avenue des Tilleuls",
    "boulevard Haussmann",
    "rue Victor Hugo",
)
_FR_STREETS += ("place de la République", "rue du Moulin", "allée des Cerisiers")
_FR_CITIES = (("Paris", "750"), ("Lyon", "6900"), ("Toulouse", "310"), ("Nantes", "440"))
_NL_STREETS = ("Keizersgracht", "Prinsengracht", "Dorpsstraat", "Kerkstraat", "Molenweg")
_ES_STREETS = ("Calle de Alcalá", "Calle Mayor", "Avenida de la Constitución", "Calle del Sol")
_IT_STREETS = ("Via Roma", "Via Garibaldi", "Corso Vittorio Emanuele", "Via dei Mille")
_UK_INWARD = "ABDEFGHJLNPQRSTUWXYZ"


def _address(rng: Rng, country: str) -> tuple[str, str]:
    """(full address, the street-number-and-name part that is the secret)."""
    if country == "us":
        street = f"{rng.randint(10, 9999)} {rng.choice(_US_STREETS)} {rng.choice(_US_TYPES)}"
        city, state, zip3 = rng.choice(_US_CITIES)
        unit = f" Apt {rng.randint(1, 40)}{rng.choice('ABCD')}" if rng.random() < 0.3 else ""
        return f"{street}{unit}, {city}, {state} {zip3}{_r(rng, _DIG, 5 - len(zip3))}", street
    if country == "uk":
        num = f"{rng.randint(1, 250)}{rng.choice(('', '', 'A', 'B'))}"
        street = f"{num} {rng.choice(_UK_STREETS)} {rng.choice(_UK_TYPES)}"
        city, area = rng.choice(_UK_CITIES)
        postcode = f"{area} {rng.randint(1, 9)}{_r(rng, _UK_INWARD, 2)}"
        return f"{street}, {city} {postcode}", street
    if country == "de":
        street = f"{rng.choice(_DE_STREETS)}{rng.choice(_DE_TYPES)} {rng.randint(1, 180)}"
        city, plz = rng.choice(_DE_CITIES)
        return f"{street}, {plz}{_r(rng, _DIG, 3)} {city}", street
    if country == "fr":
        street = f"{rng.randint(1, 120)} {rng.choice(_FR_STREETS)}"
        city, cp = rng.choice(_FR_CITIES)
        return f"{street}, {cp}{_r(rng, _DIG, 5 - len(cp))} {city}", street
    if country == "nl":
        street = f"{rng.choice(_NL_STREETS)} {rng.randint(1, 400)}"
        return f"{street}, {rng.randint(1011, 1109)} {_r(rng, _UP, 2)} Amsterdam", street
    if country == "es":
        street = f"{rng.choice(_ES_STREETS)} {rng.randint(1, 150)}"
        return f"{street}, 280{rng.randint(10, 99)} Madrid", street
    street = f"{rng.choice(_IT_STREETS)} {rng.randint(1, 200)}"
    return f"{street}, 00{rng.randint(118, 199)} Roma", street


_ADDRESS_SHAPES = (
    "ship to {v}",
    "address: {v}",
    "billing address {v} could not be verified",
    "{v}",
    "Lieferadresse: {v}",
    "customer moved to {v}",
    "geocoding failed for '{v}'",
)

_FIRST = _words(
    """
    alice bob carol dave erin frank grace heidi ivan judy oscar peggy trent victor wendy jana
    lukas sofia mateo yuki priya chen amara
    """
)
_LAST = _words(
    """
    smith jones garcia schmidt rossi dubois tanaka kumar nguyen okafor silva novak larsen
    kowalski
    """
)
_MAIL_DOMAINS = _words(
    """
    example.com example.org example.net mail.example.com corp.example eu.example.org
    students.example.edu
    """
)


def _email(rng: Rng, form: str) -> tuple[str, str]:
    """(text, the address as written in it)."""
    first, last, domain = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_MAIL_DOMAINS)
    plain = f"{first}.{last}@{domain}"
    if form == "email_plain":
        return plain, plain
    if form == "email_plus":
        addr = f"{first}+{rng.choice(('telemetry', 'ci', 'news', 'test42'))}@{domain}"
        return addr, addr
    if form == "email_digits":
        addr = f"{first}{last[0]}{rng.randint(1, 99)}@{domain}"
        return addr, addr
    if form == "email_underscore":
        addr = f"{first}_{last}@{domain}"
        return addr, addr
    if form == "email_display_name":
        return f'"{first.title()} {last.title()}" <{plain}>', plain
    if form == "email_mailto":
        return f"mailto:{plain}?subject=Access%20request", plain
    if form == "email_json":
        return json.dumps({"user": plain, "plan": "pro"}), plain
    if form == "email_uppercase":
        return plain.upper(), plain.upper()
    if form == "email_url_encoded":
        enc = plain.replace("@", "%40")
        return f"https://app.example.com/invite?email={enc}&team=7", enc
    addr = f"{first}@{rng.choice(('dev', 'ops', 'hr'))}.{domain}"
    return addr, addr


_EMAIL_FORMS = _words(
    """
    email_plain email_plus email_digits email_underscore email_display_name email_mailto
    email_json email_uppercase email_url_encoded email_subdomain
    """
)
_EMAIL_SHAPES = (
    "invite sent to {v}",
    "{v}",
    "From: {v}",
    "user {v} not found",
    "bounce from <{v}>",
    "Reply-To: {v}",
)


def pii_cases() -> list[Case]:
    """Personal data in free text: phones, cards, IBANs, SSNs, street addresses, e-mails."""
    rng = _rng("pii")
    cases: list[Case] = []

    def add(shape: str, value: str, kind: str, provider: str, secret: str | None = None) -> None:
        cases.append(_case(_fill(shape, v=value), (secret or value,), kind, provider))

    for _ in range(4):
        for provider, number in _phone_forms(rng):
            add(rng.choice(_PHONE_SHAPES), number, "pii_phone", provider)
    for brand in ("visa", "mastercard", "amex", "discover", "jcb", "diners"):
        for i in range(12):
            number = _group_card(_card_number(rng, brand), ("", " ", "-")[i % 3])
            add(rng.choice(_CARD_SHAPES), number, "pii_card", f"card_{brand}")
    for country, length, layout in _IBAN_LAYOUTS:
        for i in range(3):
            iban = _iban(rng, country, layout)
            assert len(iban) == length, (country, iban)
            if i % 2:
                iban = " ".join(iban[j : j + 4] for j in range(0, len(iban), 4))
            add(rng.choice(_IBAN_SHAPES), iban, "pii_iban", f"iban_{country.lower()}")
    for i in range(40):
        shapes = _SSN_SHAPES_LABELLED if i % 2 else _SSN_SHAPES_BARE
        add(rng.choice(shapes), _ssn(rng), "pii_ssn", "us_ssn" + ("_labelled" if i % 2 else ""))
    for country in ("us", "uk", "de", "fr", "nl", "es", "it"):
        for _ in range(9):
            full, street = _address(rng, country)
            add(rng.choice(_ADDRESS_SHAPES), full, "pii_address", f"{country}_address", street)
    for form in _EMAIL_FORMS:
        for _ in range(5):
            text, addr = _email(rng, form)
            add(rng.choice(_EMAIL_SHAPES), text, "pii_email", form, addr)
    return cases


# ---------------------------------------------------------------------------------------------
# Ordinary strings that must pass unchanged
# ---------------------------------------------------------------------------------------------

_MODULES = _words(
    """
    codeweaver_telemetry.privacy.scrubber codeweaver_telemetry.sinks.posthog
    sentence_transformers.models.Transformer pydantic_core._pydantic_core
    qdrant_client.http.exceptions httpx._transports.default urllib3.connectionpool
    asyncio.base_events concurrent.futures.thread transformers.models.bert.modeling_bert
    tree_sitter_languages.core posthog.request importlib.metadata torch.nn.modules.module
    fastembed.text.onnx_embedding
    """
)
_MODELS = _words(
    """
    text-embedding-3-small text-embedding-3-large voyage-code-3 voyage-3-lite
    sentence-transformers/all-MiniLM-L6-v2 BAAI/bge-large-en-v1.5 BAAI/bge-small-en-v1.5
    gpt-4o-mini-2024-07-18 gpt-4o-2024-08-06 claude-3-5-sonnet-20241022 claude-3-haiku-20240307
    nomic-ai/nomic-embed-text-v1.5 jinaai/jina-embeddings-v2-base-code
    mixedbread-ai/mxbai-embed-large-v1 intfloat/e5-mistral-7b-instruct
    Qwen/Qwen2.5-Coder-7B-Instruct cohere/embed-english-v3.0 mistral-embed rerank-2
    ms-marco-MiniLM-L-6-v2
    """
)
_ENUMS = _words(
    """
    UNDERSTAND IMPLEMENT DEBUG REFACTOR hybrid semantic keyword dense sparse ENABLED DISABLED
    pending completed cancelled FAST BALANCED THOROUGH cosine dot euclid
    """
)
_LANGUAGES = _words(
    """
    python Python TypeScript typescript javascript rust go Go C++ C# java kotlin swift ruby php
    scala haskell elixir bash lua zig ocaml markdown yaml toml json sql tsx
    """
)
_EXCEPTIONS = _words(
    """
    ConnectionResetError ConnectionRefusedError TimeoutError asyncio.exceptions.CancelledError
    pydantic_core._pydantic_core.ValidationError httpx.ReadTimeout httpx.ConnectError
    qdrant_client.http.exceptions.UnexpectedResponse json.decoder.JSONDecodeError
    UnicodeDecodeError KeyboardInterrupt MemoryError RecursionError PermissionError
    ModuleNotFoundError NotImplementedError requests.exceptions.SSLError
    urllib3.exceptions.MaxRetryError openai.RateLimitError torch.cuda.OutOfMemoryError
    """
)
_MESSAGES = (
    "Connection refused",
    "timed out after 30s",
    "[Errno 111] Connection refused",
    "[Errno 104] Connection reset by peer",
    "[Errno 32] Broken pipe",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Event loop is closed",
    "maximum recursion depth exceeded",
    "Expecting value: line 1 column 1 (char 0)",
    "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
    "1 validation error for Settings",
    "Input should be a valid integer",
    "field required",
    "No module named 'tree_sitter'",
    "Rate limit reached, retry in 20s",
    "Read timed out. (read timeout=10)",
    "Server disconnected without sending a response.",
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "collection not found",
    "too many open files",
    "operation was cancelled",
    "queue full, dropping event",
    "shutdown timed out, 3 events not sent",
)
_DOC_URLS = _words(
    """
    https://docs.posthog.com/docs/libraries/python https://posthog.com/docs/privacy
    https://github.com/org/repo/issues/123 https://github.com/org/repo/pull/4567
    https://pypi.org/project/posthog/ https://docs.python.org/3/library/random.html
    https://docs.pydantic.dev/latest/errors/validation_errors/
    https://qdrant.tech/documentation/concepts/collections/
    https://huggingface.co/BAAI/bge-small-en-v1.5
    https://platform.openai.com/docs/guides/embeddings https://docs.voyageai.com/docs/embeddings
    https://www.python.org/downloads/release/python-3127/ https://semver.org/
    https://example.com/ https://docs.anthropic.com/en/docs/about-claude/models
    """
)
_FLAGS = (
    "--verbose",
    "-v",
    "-vv",
    "--quiet",
    "--log-level=debug",
    "--log-level info",
    "-p 8080",
    "--port 6333",
    "--port=8000",
    "--workers 4",
    "--dry-run",
    "--no-color",
    "--format json",
    "--max-results=25",
    "--timeout 30",
    "-j 8",
    "--help",
    "--version",
    "--batch-size=64",
    "--reload",
)
_CONFIG_PARTS = _words("TELEMETRY EMBEDDING VECTOR_STORE INDEXER LOGGING SERVER")
_CONFIG_LEAVES = _words(
    """
    EXIT_TIMEOUT_SECONDS ENABLED BATCH_SIZE PROVIDER MODEL LEVEL MAX_RETRIES PORT
    FLUSH_INTERVAL_MS
    """
)
_ROUTES = _words(
    """
    /v1/embeddings /api/v2/users/{id} /healthz /readyz /collections/{name}/points/search
    /v1/chat/completions /capture/ /decide/?v=3 /batch/ /metrics
    """
)
_STATUS = (
    "200 OK",
    "201 Created",
    "204 No Content",
    "301 Moved Permanently",
    "304 Not Modified",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "409 Conflict",
    "413 Payload Too Large",
    "422 Unprocessable Entity",
    "429 Too Many Requests",
    "500 Internal Server Error",
    "502 Bad Gateway",
    "503 Service Unavailable",
    "504 Gateway Timeout",
)
_PLATFORMS = _words(
    """
    Linux-6.1.0-x86_64-with-glibc2.36 Linux-5.15.0-1057-azure-x86_64-with-glibc2.35
    macOS-14.5-arm64-arm-64bit Windows-10-10.0.22631-SP0 x86_64-unknown-linux-gnu
    aarch64-unknown-linux-musl aarch64-apple-darwin darwin-arm64 linux-x64 win32 win_amd64
    manylinux_2_17_x86_64 musllinux_1_2_aarch64 cp312-cp312-macosx_11_0_arm64
    """
)
_GLOBS = _words(
    """
    *.py **/*.ts *.md src/**/*.rs **/*.{js,jsx} *.pyi tests/** !**/node_modules/** *.tar.gz .py
    .tsx .ipynb .rs .go
    """
)
_MIMES: tuple[str, ...] = (
    "application/json",
    "text/plain; charset=utf-8",
    "application/x-ndjson",
    "text/html",
)
_MIMES += ("application/octet-stream", "multipart/form-data", "text/x-python", "image/png")
_MIMES += ("application/vnd.api+json", "text/event-stream", "application/gzip")
_ID_WORDS = _words(
    """
    get all feature flag payloads telemetry configuration error max concurrent embedding
    requests vector store batch size index refresh interval search result handler default
    timeout
    """
)
_LOCALES = _words("en_US.UTF-8 de_DE.UTF-8 C.UTF-8 fr_FR ja_JP.UTF-8 pt_BR POSIX")
_TIMEZONES = _words(
    """
    Europe/Berlin America/New_York Asia/Tokyo UTC Europe/London America/Los_Angeles
    Australia/Sydney America/Sao_Paulo Asia/Kolkata
    """
)
_AGENTS = _words(
    """
    python-requests/2.32.3 posthog-python/7.0.0 python-httpx/0.27.2 aiohttp/3.10.5 curl/8.5.0
    qdrant-client/1.12.1 codeweaver/0.5.0 Python-urllib/3.12 pip/24.2 uv/0.4.18
    """
)
_IMAGES = _words(
    """
    python:3.12-slim ghcr.io/org/app:1.4.2 qdrant/qdrant:v1.12.4 redis:7-alpine postgres:16.4
    node:20-bookworm ubuntu:24.04 mcr.microsoft.com/devcontainers/python:3.11
    """
)
_RANGES = _words(">=3.10 >=1.0,<2 ~=2.7 ^1.4.0 ~1.2.3 <8 !=1.5.0 >=0.6 ==24.*")
_SENTENCES = (
    "Search finished in {ms} ms with {n} results",
    "index is {pct}% stale",
    "indexed {n} files in {s}s",
    "embedding batch of {n} chunks took {ms}ms",
    "flushed {n} events",
    "retry {k} of 5 in {s}s",
    "cache hit rate {pct}%",
    "{n} files skipped: too large",
    "worker {k} started",
    "queue depth {n}",
    "reranked top {n} of {m} candidates",
    "session lasted {s} minutes",
    "{n} tokens in, {m} tokens out",
    "max_tokens={m}",
    "chunk size {n} lines, overlap {k}",
    "dropped {k} events (queue full)",
)


def _luhn_valid(digits: str) -> bool:
    return _luhn_check_digit(digits[:-1]) == digits[-1]


def _not_a_card(number: str) -> str:
    """Bump the last digit of a 12-19 digit number until it fails the Luhn check."""
    if 12 <= len(number) <= 19 and _luhn_valid(number):
        return number[:-1] + str((int(number[-1]) + 1) % 10)
    return number


def _snake_ids(rng: Rng, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        words = rng.sample(_ID_WORDS, rng.randint(3, 5))
        style = len(out) % 4
        if style == 0:
            ident = words[0] + "".join(w.title() for w in words[1:])
        elif style == 1:
            ident = "".join(w.title() for w in words)
        elif style == 2:
            ident = "_".join(words)
        else:
            ident = "_".join(words).upper()
        if 20 <= len(ident) <= 40:
            out.append(ident)
    return out


def ordinary_strings() -> list[str]:
    """Everyday telemetry values that hold nothing secret or personal: must pass unchanged."""
    rng = _rng("ordinary")
    out: list[str] = []
    # versions
    for _ in range(30):
        v = f"{rng.randint(0, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"
        suffix = rng.choice(("", "", "-rc.1", "-beta.2", ".dev3", "a1", "+build.5", "-alpha"))
        out.append(rng.choice(("", "v")) + v + suffix)
    out += ["0.5.0", "v1.2.3-rc.1", "3.11.7", "2024.10.1", "2025.1.0", "24.04", "1.0"]
    out += list(_MODULES) + list(_MODELS) + list(_ENUMS) + list(_LANGUAGES) + list(_EXCEPTIONS)
    out += list(_MESSAGES)
    out += [
        f"{e}: {m}"
        for e, m in zip(rng.sample(_EXCEPTIONS, 12), rng.sample(_MESSAGES, 12), strict=True)
    ]
    # durations
    for _ in range(24):
        out.append(
            rng.choice(
                (
                    f"{rng.randint(1, 999)}ms",
                    f"{rng.randint(1, 999)} ms",
                    f"{rng.randint(1, 59)}.{rng.randint(0, 9)}s",
                    f"{rng.randint(1, 9)}h{rng.randint(1, 59)}m",
                    f"{rng.randint(1, 59)}m{rng.randint(1, 59)}s",
                    f"{rng.randint(1, 900)}µs",
                )
            )
        )
    # dates, datetimes and epochs
    for _ in range(16):
        out.append(
            _timestamp(rng, rng.choice(("T", " "))) + rng.choice(("", "Z", "+00:00", ".512Z"))
        )
        out.append(_timestamp(rng)[:10])
    for _ in range(8):
        secs = rng.randint(1_700_000_000, 1_800_000_000)
        out.append(str(secs))
        out.append(_not_a_card(str(secs * 1000 + rng.randint(0, 999))))
    # counts and ids
    for _ in range(16):
        out.append(_not_a_card(str(rng.randint(0, 10 ** rng.randint(1, 16)))))
    out += ["#1234", "PR #4567", "issue 123", "job 20251123-7", "build 4821", "attempt 3/5"]
    # uuids v4 and v7
    for _ in range(10):
        out.append(_uuid4(rng))
        ms = rng.randint(1_700_000_000_000, 1_800_000_000_000)
        h = f"{ms:012x}" + _r(rng, _HEX, 20)
        out.append(f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{rng.choice('89ab')}{h[17:20]}-{h[20:32]}")
    # short hex ids
    for n in (7, 7, 7, 8, 8, 10, 12, 12, 16, 16, 16):
        out.append(_r(rng, _HEX, n))
    out += ["a1b2c3d4e5f60718", "3f9a0c1", "commit 3f9a0c1", "sha256:3f9a0c1d2e4b5a69"]
    out += list(_DOC_URLS) + list(_FLAGS)
    # config keys
    for part in _CONFIG_PARTS:
        for leaf in rng.sample(_CONFIG_LEAVES, 3):
            out.append(f"CODEWEAVER__{part}__{leaf}")
            out.append(f"{part.lower()}.{leaf.lower()}")
    out += ["embedding.provider", "vector_store.url", "telemetry.enabled", "logging.level"]
    # routes
    for route in _ROUTES:
        out.append(f"{rng.choice(('GET', 'POST', 'PUT', 'DELETE', 'PATCH'))} {route}")
    out += list(_ROUTES)
    # loopback URLs
    for host in ("127.0.0.1", "localhost", "[::1]"):
        for port, path in rng.sample(
            [
                (6333, "/collections"),
                (8000, "/docs"),
                (8080, "/"),
                (6334, ""),
                (11434, "/api/tags"),
            ],
            4,
        ):
            out.append(f"http://{host}:{port}{path}")
    out += [f"HTTP/1.1 {s}" for s in _STATUS] + list(_STATUS)
    out += list(_PLATFORMS) + list(_GLOBS) + list(_MIMES)
    out += _snake_ids(rng, 40)
    for template in _SENTENCES:
        for _ in range(4):
            out.append(
                _fill(
                    template,
                    ms=str(rng.randint(2, 4000)),
                    n=str(rng.randint(1, 5000)),
                    m=str(rng.randint(1, 9000)),
                    s=f"{rng.randint(0, 90)}.{rng.randint(0, 9)}",
                    pct=str(rng.randint(0, 100)),
                    k=str(rng.randint(1, 9)),
                )
            )
    for _ in range(10):
        out.append(f"{rng.randint(0, 100)}.{rng.randint(0, 9)}%")
        unit = rng.choice(("KiB", "MiB", "GiB", "kB", "MB", "B", "bytes"))
        out.append(f"{rng.randint(1, 1024)} {unit}")
    out += list(_LOCALES) + list(_TIMEZONES) + list(_AGENTS) + list(_IMAGES) + list(_RANGES)
    out += [
        "3.11.7 (main, Dec  4 2023, 18:10:11) [GCC 12.2.0]",
        "3.12.4 (main, Jun  6 2024, 18:26:44) [Clang 15.0.0 (clang-1500.3.9.4)]",
        "3.10.12 (main, Nov 20 2023, 15:14:05) [GCC 11.4.0]",
        "3.13.0 (main, Oct  7 2024, 05:02:14) [MSC v.1941 64 bit (AMD64)]",
        "CPython 3.12.4",
        "PyPy 7.3.17",
    ]
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------------
# Measuring a scrubber
# ---------------------------------------------------------------------------------------------


def leaks(case: Case, output: str) -> list[str]:
    """The secrets of ``case`` of which some window of ``WINDOW`` characters survives.

    Windows that also occur in the case text with every secret cut out (each replaced by a
    NUL, so no new windows form across the cut) are ignored: they say nothing about the
    secret, only that the surrounding sentence shares some characters with it.
    """
    residue = case.text
    for secret in sorted(case.secrets, key=len, reverse=True):
        residue = residue.replace(secret, "\0")
    leaked: list[str] = []
    for secret in case.secrets:
        for i in range(len(secret) - WINDOW + 1):
            window = secret[i : i + WINDOW]
            if window in output and window not in residue:
                leaked.append(secret)
                break
    return leaked


def _ratio(caught: int, total: int) -> str:
    return f"{caught}/{total} ({100.0 * caught / total:.1f}%)" if total else "0/0"


@dataclass
class Report:
    """What ``measure`` found: recall on the cases, false positives, throughput."""

    caught: int
    total: int
    by_kind: dict[str, tuple[int, int]]
    by_provider: dict[str, tuple[int, int]]
    missed: list[tuple[Case, str]] = field(default_factory=list)
    false_positives: list[tuple[str, str]] = field(default_factory=list)
    ordinary_total: int = 0
    strings: int = 0
    seconds: float = 0.0
    strings_per_second: float = 0.0

    @property
    def recall(self) -> float:
        return self.caught / self.total if self.total else 1.0

    def summary(self, *, providers: int = 15, examples: int = 3) -> str:
        """A few lines for a terminal: totals, recall per kind, the weakest providers."""
        lines = [
            f"caught {_ratio(self.caught, self.total)} cases; "
            f"false positives {_ratio(len(self.false_positives), self.ordinary_total)} "
            f"ordinary strings; {self.strings_per_second:,.0f} strings/s "
            f"({self.strings} strings in {self.seconds:.3f} s)",
            "by kind:",
        ]
        lines += [f"  {k:<16} {_ratio(*v)}" for k, v in sorted(self.by_kind.items())]
        weak = sorted((v[0] / v[1], name, v) for name, v in self.by_provider.items() if v[0] < v[1])
        full = len(self.by_provider) - len(weak)
        lines.append(
            f"providers: {full} of {len(self.by_provider)} fully caught; weakest {providers}:"
        )
        lines += [f"  {name:<28} {_ratio(*v)}" for _, name, v in weak[:providers]]
        shown: set[str] = set()
        for case, output in self.missed:  # one example per kind, the first of each
            if case.kind not in shown and len(shown) < examples:
                shown.add(case.kind)
                lines.append(f"missed [{case.kind}/{case.provider}]: {output[:100]!r}")
        for text, output in self.false_positives[:examples]:
            lines.append(f"false positive: {text[:60]!r} -> {output[:60]!r}")
        return "\n".join(lines)


def _tally(counts: dict[str, tuple[int, int]], key: str, ok: bool) -> None:
    caught, total = counts.get(key, (0, 0))
    counts[key] = (caught + ok, total + 1)


def measure(scrub: Callable[[str], str], cases: Sequence[Case] | None = None) -> Report:
    """Scrub every corpus string once (timed), then score recall and false positives."""
    all_cases = list(cases) if cases is not None else secret_cases() + pii_cases()
    ordinary = ordinary_strings()
    inputs = [c.text for c in all_cases] + ordinary
    start = time.perf_counter()
    outputs = [scrub(text) for text in inputs]
    seconds = time.perf_counter() - start

    by_kind: dict[str, tuple[int, int]] = {}
    by_provider: dict[str, tuple[int, int]] = {}
    missed: list[tuple[Case, str]] = []
    caught = 0
    for case, output in zip(all_cases, outputs[: len(all_cases)], strict=True):
        ok = not leaks(case, output)
        caught += ok
        _tally(by_kind, case.kind, ok)
        _tally(by_provider, case.provider, ok)
        if not ok:
            missed.append((case, output))
    false_positives = [
        (text, output)
        for text, output in zip(ordinary, outputs[len(all_cases) :], strict=True)
        if output != text
    ]
    return Report(
        caught=caught,
        total=len(all_cases),
        by_kind=by_kind,
        by_provider=by_provider,
        missed=missed,
        false_positives=false_positives,
        ordinary_total=len(ordinary),
        strings=len(inputs),
        seconds=seconds,
        strings_per_second=len(inputs) / seconds if seconds > 0 else float("inf"),
    )
