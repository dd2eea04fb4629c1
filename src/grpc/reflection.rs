//! Server reflection (v1 and v1alpha) that answers every request on its
//! stream.
//!
//! The reflection protocol answers a lookup that fails (an unknown file or
//! symbol) with an `ErrorResponse` on the stream, which stays open for the
//! next request, as the C++, Go and Java servers do. tonic-reflection ends
//! the whole stream with a status instead: the requests after it go
//! unanswered, and Python's descriptor database over reflection raises a
//! broken stream where its pool expects a `KeyError`. Each request here is
//! put to tonic-reflection's service on a stream of its own, in process,
//! and a refusal becomes the `ErrorResponse` it should have been.

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

macro_rules! answering_every_request {
    ($version:ident) => {
        pub mod $version {
            use super::*;
            use tonic_reflection::pb::$version::{
                ErrorResponse, ServerReflectionRequest, ServerReflectionResponse,
                server_reflection_client::ServerReflectionClient,
                server_reflection_response::MessageResponse,
                server_reflection_server::{ServerReflection, ServerReflectionServer},
            };

            /// tonic-reflection's lookups, asked one request at a time.
            pub struct Reflection<S> {
                lookups: ServerReflectionServer<S>,
            }

            impl<S> Reflection<S> {
                pub fn new(lookups: ServerReflectionServer<S>) -> ServerReflectionServer<Self> {
                    ServerReflectionServer::new(Self { lookups })
                }
            }

            #[tonic::async_trait]
            impl<S: ServerReflection> ServerReflection for Reflection<S> {
                type ServerReflectionInfoStream =
                    ReceiverStream<Result<ServerReflectionResponse, Status>>;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
                    let mut requests = request.into_inner();
                    let mut lookups = ServerReflectionClient::new(self.lookups.clone());
                    let (answers, rx) = mpsc::channel(1);
                    tokio::spawn(async move {
                        while let Some(request) = requests.next().await {
                            let answer = match request {
                                Ok(request) => Ok(answer(&mut lookups, request).await),
                                // A message that does not decode ends the
                                // stream with its status.
                                Err(status) => Err(status),
                            };
                            let last = answer.is_err();
                            if answers.send(answer).await.is_err() || last {
                                return;
                            }
                        }
                    });
                    Ok(Response::new(ReceiverStream::new(rx)))
                }
            }

            async fn answer<S: ServerReflection>(
                lookups: &mut ServerReflectionClient<ServerReflectionServer<S>>,
                request: ServerReflectionRequest,
            ) -> ServerReflectionResponse {
                let asked = request.clone();
                let answered = async {
                    lookups
                        .server_reflection_info(tokio_stream::once(request))
                        .await?
                        .into_inner()
                        .message()
                        .await?
                        .ok_or_else(|| Status::internal("the lookup gave no answer"))
                }
                .await;
                answered.unwrap_or_else(|status| ServerReflectionResponse {
                    valid_host: asked.host.clone(),
                    original_request: Some(asked),
                    message_response: Some(MessageResponse::ErrorResponse(ErrorResponse {
                        error_code: status.code() as i32,
                        error_message: status.message().to_owned(),
                    })),
                })
            }
        }
    };
}

answering_every_request!(v1);
answering_every_request!(v1alpha);
