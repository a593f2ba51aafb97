//! The WebSocket connection registry in DynamoDB (`CONNECTIONS_TABLE`).
//!
//! Items, keyed `pk` (the connection id) and `sk`:
//! - `sk = "connection"`: one per connection — its role (`customer` |
//!   `agent`), who it is (`subject`: the customer id, or the agent's
//!   name), `connected_at`, and for a customer the one `conversation_id`
//!   its token opened;
//! - `sk = "watch#<conversation>"`: one per conversation an agent
//!   subscribed to, with that `conversation_id`.
//!
//! The index `by_conversation` (hash `conversation_id`, sparse) finds every
//! connection to push a conversation's messages to. Every item carries
//! `ttl` (epoch seconds): API Gateway closes a connection after 2 h at
//! most, so items live 2 h plus a margin; DynamoDB deletes expired items
//! lazily (up to days later), so every read filters on it too.
//!
//! The table is created by setup (`local-gateway migrate`, or the SAM
//! template in AWS), never while handling a request.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata},
    types::{
        AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
        ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    },
};

use crate::{clock::now_epoch_seconds, error::AppError};

/// The index of connections by conversation.
pub const BY_CONVERSATION: &str = "by_conversation";
/// API Gateway's longest connection, and a margin for clocks.
pub const CONNECTION_TTL_SECS: u64 = 2 * 3600 + 600;

const CONNECTION_SK: &str = "connection";

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Agent => "agent",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Self::Customer),
            "agent" => Some(Self::Agent),
            _ => None,
        }
    }
}

/// One registered connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub connection_id: String,
    pub role: Role,
    /// The customer id, or the agent's name (`admin` for the admin token).
    pub subject: String,
    /// A customer's conversation (agents subscribe instead).
    pub conversation_id: Option<String>,
    pub connected_at: u64,
}

/// The registry over one table.
#[derive(Debug, Clone)]
pub struct Registry {
    client: Client,
    table: String,
}

fn unavailable<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    error: aws_sdk_dynamodb::error::SdkError<E>,
) -> AppError {
    tracing::warn!(error = %DisplayErrorContext(&error), "dynamodb {what} failed");
    AppError::Unavailable { dependency: "dynamodb" }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn now() -> u64 {
    now_epoch_seconds() as u64
}

impl Registry {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table, its index and its TTL unless it exists (setup only).
    pub async fn create_table(&self) -> Result<bool, AppError> {
        match self.client.describe_table().table_name(&self.table).send().await {
            Ok(_) => return Ok(false),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {}
            Err(e) => return Err(unavailable("describe table", e)),
        }
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|_| AppError::Internal)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(|_| AppError::Internal)
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(BY_CONVERSATION)
            .key_schema(key("conversation_id", KeyType::Hash)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(|_| AppError::Internal)?;
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .attribute_definitions(attribute("conversation_id")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(index)
            .send()
            .await
            .map_err(|e| unavailable("create table", e))?;
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name("ttl")
            .enabled(true)
            .build()
            .map_err(|_| AppError::Internal)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| unavailable("update time to live", e))?;
        Ok(true)
    }

    /// Whether the table answers (health).
    pub async fn ping(&self) -> Result<(), AppError> {
        self.client.describe_table().table_name(&self.table).send().await.map_err(|e| unavailable("describe", e))?;
        Ok(())
    }

    /// Registers a connection (`$connect`).
    pub async fn register(&self, connection: &Connection) -> Result<(), AppError> {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(&connection.connection_id)),
            ("sk".to_owned(), s(CONNECTION_SK)),
            ("role".to_owned(), s(connection.role.as_str())),
            ("subject".to_owned(), s(&connection.subject)),
            ("connected_at".to_owned(), n(connection.connected_at)),
            ("ttl".to_owned(), n(connection.connected_at + CONNECTION_TTL_SECS)),
        ]);
        if let Some(conversation) = &connection.conversation_id {
            item.insert("conversation_id".into(), s(conversation));
        }
        self.put(item, "put connection").await
    }

    async fn put(&self, item: HashMap<String, AttributeValue>, what: &str) -> Result<(), AppError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable(what, e))?;
        Ok(())
    }

    /// A live connection's registration (`None`: unknown or expired).
    pub async fn get(&self, connection_id: &str) -> Result<Option<Connection>, AppError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(connection_id))
            .key("sk", s(CONNECTION_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("get connection", e))?;
        let Some(item) = output.item else { return Ok(None) };
        if number(&item, "ttl").is_some_and(|ttl| ttl <= now()) {
            return Ok(None);
        }
        Ok(Some(Connection {
            connection_id: connection_id.to_owned(),
            role: text(&item, "role").as_deref().and_then(Role::parse).ok_or(AppError::Internal)?,
            subject: text(&item, "subject").unwrap_or_default(),
            conversation_id: text(&item, "conversation_id"),
            connected_at: number(&item, "connected_at").unwrap_or_default(),
        }))
    }

    /// An agent's connection watches `conversation` until it unsubscribes or goes.
    pub async fn watch(&self, connection: &Connection, conversation: &str) -> Result<(), AppError> {
        let item = HashMap::from([
            ("pk".to_owned(), s(&connection.connection_id)),
            ("sk".to_owned(), s(&format!("watch#{conversation}"))),
            ("conversation_id".to_owned(), s(conversation)),
            ("role".to_owned(), s(connection.role.as_str())),
            ("subject".to_owned(), s(&connection.subject)),
            ("connected_at".to_owned(), n(connection.connected_at)),
            ("ttl".to_owned(), n(connection.connected_at + CONNECTION_TTL_SECS)),
        ]);
        self.put(item, "put watch").await
    }

    pub async fn unwatch(&self, connection_id: &str, conversation: &str) -> Result<(), AppError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(connection_id))
            .key("sk", s(&format!("watch#{conversation}")))
            .send()
            .await
            .map_err(|e| unavailable("delete watch", e))?;
        Ok(())
    }

    /// Deletes every item of a connection (`$disconnect`, or a push answered `410`).
    pub async fn forget(&self, connection_id: &str) -> Result<(), AppError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(connection_id))
            .projection_expression("pk, sk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("query connection", e))?;
        for item in output.items() {
            let Some(sk) = text(item, "sk") else { continue };
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(connection_id))
                .key("sk", s(&sk))
                .send()
                .await
                .map_err(|e| unavailable("delete connection", e))?;
        }
        Ok(())
    }

    /// Every live connection watching `conversation` (its customer's and its
    /// agents'), each once.
    pub async fn watchers(&self, conversation: &str) -> Result<Vec<Connection>, AppError> {
        let mut found: Vec<Connection> = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_CONVERSATION)
                .key_condition_expression("conversation_id = :c")
                .filter_expression("#ttl > :now")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":c", s(conversation))
                .expression_attribute_values(":now", n(now()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("query watchers", e))?;
            for item in output.items() {
                let (Some(id), Some(role)) = (text(item, "pk"), text(item, "role").as_deref().and_then(Role::parse))
                else {
                    continue;
                };
                if found.iter().any(|c| c.connection_id == id) {
                    continue;
                }
                found.push(Connection {
                    connection_id: id,
                    role,
                    subject: text(item, "subject").unwrap_or_default(),
                    conversation_id: Some(conversation.to_owned()),
                    connected_at: number(item, "connected_at").unwrap_or_default(),
                });
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(found),
            }
        }
    }
}
