"""Redaction: credentials never reach an export, whatever the URL."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from aiotrace import Redaction
from aiotrace._record.redact import REDACTED

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=12)
# Upper-case only: no other part of the generated URL (lower-case words) can contain one.
secrets = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=10, max_size=16).filter(
    lambda s: REDACTED not in s
)


@settings(max_examples=300, deadline=None)
@given(
    user=words,
    password=secrets,
    host=st.sampled_from(["a.test", "127.0.0.1", "[::1]", "example.org"]),
    path=st.lists(words, max_size=3),
    params=st.lists(st.tuples(words, words), max_size=4),
    secret_param=st.sampled_from(["token", "access_token", "key", "signature", "API_KEY", "Sig"]),
    secret=secrets,
)
def test_user_info_and_sensitive_params_never_survive(
    user: str,
    password: str,
    host: str,
    path: list[str],
    params: list[tuple[str, str]],
    secret_param: str,
    secret: str,
) -> None:
    """User info and sensitive query values are gone from any URL; other parts are kept."""
    query = [*params, (secret_param, secret)]
    url = URL.build(
        scheme="https", user=user, password=password, host=host.strip("[]"),
        path="/" + "/".join(path), query=query,
    )  # fmt: skip
    text = Redaction().url(url)
    assert text is not None
    assert password not in text
    assert secret not in text
    assert f"{user}@" not in text
    redacted = URL(text)
    # Every value of a sensitive name is redacted (params may hold the same name again).
    assert set(redacted.query.getall(secret_param)) == {REDACTED}
    for name, value in params:
        if name.lower() not in Redaction().query_params:
            assert value in redacted.query.getall(name)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_handled_without_error(text: str) -> None:
    """Redacting arbitrary text as a URL never raises an unexpected error type."""
    try:
        Redaction().url(text)
    except ValueError:
        pass  # yarl rejects it as a URL: the caller reports it


def test_opt_out_and_extra_params() -> None:
    """Redaction can be turned off, and extended with the user's own parameter names."""
    url = "http://u:p@a.test/x?session=abc&token=t"
    assert Redaction(enabled=False).url(url) == url
    assert Redaction.with_params(["session"]).url(url) == (
        f"http://a.test/x?session={REDACTED}&token={REDACTED}"
    )
    assert Redaction().header("Authorization", "Bearer x") == REDACTED
    assert Redaction().header("Accept", "text/html") == "text/html"
