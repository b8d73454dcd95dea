//! Where a request names its tenant: [`ResolveTenant`], and the resolvers that read a
//! header, the host's subdomain, a path segment, or ask a closure.

use http::header::{HOST, HeaderName};
use http::request::Parts;
use std::borrow::Cow;

/// Finds the text of a request's tenant id. The layer parses and validates what it gives
/// ([`TenantId::parse_tenant_id`](crate::TenantId::parse_tenant_id)); `None` means the
/// request names no tenant (or names it ambiguously) and is answered 400.
///
/// Implemented by [`Header`], [`Subdomain`], [`PathSegment`] and [`FromFn`]
/// ([`from_fn`]).
pub trait ResolveTenant: Send + Sync + 'static {
    /// The tenant id's text in `request`, if it names exactly one.
    fn resolve<'a>(&self, request: &'a Parts) -> Option<Cow<'a, str>>;
}

/// The tenant in a request header, `X-Tenant-Id` by default. A request that carries the
/// header more than once names no tenant (a proxy and the application could each read a
/// different one).
#[derive(Clone, Debug)]
pub struct Header {
    name: HeaderName,
}

impl Header {
    /// The tenant in the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Header { name }
    }
}

impl Default for Header {
    /// The header `X-Tenant-Id`.
    fn default() -> Self {
        Header::new(HeaderName::from_static("x-tenant-id"))
    }
}

impl ResolveTenant for Header {
    fn resolve<'a>(&self, request: &'a Parts) -> Option<Cow<'a, str>> {
        let mut values = request.headers.get_all(&self.name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            tracing::debug!(target: "tenancy::web", header = %self.name, "tenant header given twice");
            return None;
        }
        std::str::from_utf8(value.as_bytes())
            .ok()
            .map(Cow::Borrowed)
    }
}

/// The tenant as the one label in front of a base domain: `acme` in `acme.example.com`
/// for `Subdomain::of("example.com")`.
///
/// Host names do not distinguish case, so the label is lowercased (`ACME.example.com` is
/// `acme`); the port and a final dot are ignored. The host is read from the request's URI
/// when it has one (HTTP/2, absolute form), else from the one `Host` header. A host that
/// is not directly under the base domain (`example.com` itself, `a.b.example.com`,
/// `acme.example.com.evil.test`, `acmeexample.com`) names no tenant.
#[derive(Clone, Debug)]
pub struct Subdomain {
    /// `.` and the base domain, lowercased.
    suffix: String,
}

impl Subdomain {
    /// Tenants are the labels directly under `base` (e.g. `"example.com"`).
    pub fn of(base: &str) -> Self {
        let base = base.trim_matches('.').to_ascii_lowercase();
        Subdomain {
            suffix: format!(".{base}"),
        }
    }
}

impl ResolveTenant for Subdomain {
    fn resolve<'a>(&self, request: &'a Parts) -> Option<Cow<'a, str>> {
        let host = match request.uri.host() {
            Some(host) => host,
            None => {
                let mut hosts = request.headers.get_all(HOST).iter();
                let host = hosts.next()?;
                if hosts.next().is_some() {
                    return None;
                }
                let host = host.to_str().ok()?;
                // `host:port`; a bracketed IPv6 address names no tenant anyway.
                host.rsplit_once(':').map_or(host, |(name, _)| name)
            }
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let label_len = host.len().checked_sub(self.suffix.len())?;
        let (label, rest) = (host.get(..label_len)?, host.get(label_len..)?);
        if label.is_empty() || label.contains('.') || !rest.eq_ignore_ascii_case(&self.suffix) {
            return None;
        }
        Some(if label.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(label.to_ascii_lowercase())
        } else {
            Cow::Borrowed(label)
        })
    }
}

/// The tenant as the `index`-th segment of the request's path, counting from 0:
/// `PathSegment::new(1)` reads `42` from `/tenants/42/orders`. The segment is
/// percent-decoded, as axum's `Path` extractor does; one that does not decode to UTF-8
/// names no tenant.
///
/// Under `Router::nest`, the path the layer sees is the one the nested router sees (the
/// prefix removed) when the layer is added to the nested router.
#[derive(Clone, Copy, Debug)]
pub struct PathSegment {
    index: usize,
}

impl PathSegment {
    /// The `index`-th segment (from 0) of the path.
    pub fn new(index: usize) -> Self {
        PathSegment { index }
    }
}

impl ResolveTenant for PathSegment {
    fn resolve<'a>(&self, request: &'a Parts) -> Option<Cow<'a, str>> {
        let path = request.uri.path().strip_prefix('/')?;
        let segment = path.split('/').nth(self.index)?;
        if segment.is_empty() {
            return None;
        }
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()
    }
}

/// The tenant as a closure finds it: for a JWT claim, a session, an API key's owner.
/// Made by [`from_fn`].
#[derive(Clone)]
pub struct FromFn<F> {
    resolve: F,
}

impl<F> std::fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FromFn")
    }
}

/// A resolver that calls `resolve` with the request's head. Authentication that runs
/// before the layer (a JWT check, a session lookup) typically leaves its result in the
/// request's extensions, where the closure reads it:
///
/// ```
/// use tenancy_sea::web::{ResolveTenant, from_fn};
///
/// #[derive(Clone)]
/// struct Claims { org: String }
///
/// let by_claim = from_fn(|request| {
///     request.extensions.get::<Claims>().map(|claims| claims.org.clone())
/// });
/// # let (mut parts, ()) = http::Request::new(()).into_parts();
/// # assert_eq!(by_claim.resolve(&parts), None);
/// # parts.extensions.insert(Claims { org: "acme".into() });
/// # assert_eq!(by_claim.resolve(&parts).as_deref(), Some("acme"));
/// ```
pub fn from_fn<F>(resolve: F) -> FromFn<F>
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    FromFn { resolve }
}

impl<F> ResolveTenant for FromFn<F>
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn resolve<'a>(&self, request: &'a Parts) -> Option<Cow<'a, str>> {
        (self.resolve)(request).map(Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&'static str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        match builder.body(()) {
            Ok(request) => request.into_parts().0,
            Err(error) => unreachable!("a valid test request: {error}"),
        }
    }

    fn subdomain(host: &str) -> Option<String> {
        Subdomain::of("Example.com")
            .resolve(&parts("/", &[("host", host)]))
            .map(Cow::into_owned)
    }

    #[test]
    fn subdomains_are_one_label_directly_under_the_base() {
        assert_eq!(subdomain("acme.example.com").as_deref(), Some("acme"));
        assert_eq!(subdomain("ACME.Example.COM:8080").as_deref(), Some("acme"));
        assert_eq!(subdomain("acme.example.com.").as_deref(), Some("acme"));
        for host in [
            "example.com",
            ".example.com",
            "a.b.example.com",
            "acmeexample.com",
            "acme.example.com.evil.test",
            "acme.example.org",
            "[::1]:3000",
            "",
        ] {
            assert_eq!(subdomain(host), None, "{host:?}");
        }
        // An absolute URI's host wins over the header, as HTTP says.
        let request = parts("http://acme.example.com/x", &[("host", "evil.example.com")]);
        assert_eq!(
            Subdomain::of("example.com").resolve(&request).as_deref(),
            Some("acme")
        );
        let twice = parts("/", &[("host", "a.example.com"), ("host", "b.example.com")]);
        assert_eq!(Subdomain::of("example.com").resolve(&twice), None);
    }

    #[test]
    fn a_header_given_twice_names_no_tenant() {
        let header = Header::default();
        let once = parts("/", &[("x-tenant-id", "7")]);
        assert_eq!(header.resolve(&once).as_deref(), Some("7"));
        let twice = parts("/", &[("x-tenant-id", "7"), ("X-Tenant-Id", "8")]);
        assert_eq!(header.resolve(&twice), None);
        assert_eq!(header.resolve(&parts("/", &[])), None);
    }

    #[test]
    fn path_segments_are_counted_from_zero_and_decoded() {
        let request = parts("/tenants/ac%20me/orders?x=1", &[]);
        assert_eq!(
            PathSegment::new(0).resolve(&request).as_deref(),
            Some("tenants")
        );
        assert_eq!(
            PathSegment::new(1).resolve(&request).as_deref(),
            Some("ac me")
        );
        assert_eq!(PathSegment::new(3).resolve(&request), None);
        assert_eq!(
            PathSegment::new(1).resolve(&parts("/tenants//x", &[])),
            None
        );
        assert_eq!(PathSegment::new(1).resolve(&parts("/t/%FF", &[])), None);
    }
}
