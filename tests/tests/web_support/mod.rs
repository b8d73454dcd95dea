//! A router served on a random local port, and an HTTP client to drive it.

use axum::Router;
use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;

/// A router serving on 127.0.0.1 at a port the system chose; stopped when dropped.
pub struct Server {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(router: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Server { address, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 client (hyper's, pooled connections) for one server.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
}

/// A response: the status, the `Retry-After` header if any, and the body as text.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.body))
    }
}

impl Client {
    pub fn of(server: &Server) -> Client {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", server.address),
        }
    }

    /// Sends `method path` with the headers given (each as it is: repeated names repeat)
    /// and a JSON body if any.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        json: Option<serde_json::Value>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match json {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let response = self
            .inner
            .request(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `method path` as tenant `tenant` (its `X-Tenant-Id`).
    pub async fn as_tenant(
        &self,
        tenant: &str,
        method: Method,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> Reply {
        self.send(method, path, &[("x-tenant-id", tenant.as_bytes())], json)
            .await
    }
}
