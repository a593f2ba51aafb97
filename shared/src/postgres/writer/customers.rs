//! The `customers` part of a batch: contact details (phone, e-mail, name,
//! address) found in customer messages, merged field by field and never
//! erased, so a message written twice or out of order changes nothing.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_postgres::GenericClient;

use super::MessageRow;
use crate::customer_info::{self, CustomerInfo};

/// Customer details from customer messages, merged per (page, sender) in
/// timestamp order before the upsert (one row per key per statement).
pub(super) async fn write_customers(db: &impl GenericClient, rows: &[MessageRow]) -> Result<(), tokio_postgres::Error> {
    let mut merged: BTreeMap<(String, String), (f64, String, CustomerInfo)> = BTreeMap::new();
    let mut ordered: Vec<&MessageRow> =
        rows.iter().filter(|r| matches!(r.job.sender_type.as_str(), "user" | "customer")).collect();
    ordered.sort_by(|a, b| a.job.timestamp.total_cmp(&b.job.timestamp));
    for row in ordered {
        let mut info = customer_info::extract(&row.job.content);
        if info.name.is_none() {
            info.name = row.job.metadata.get("sender_name").and_then(Value::as_str).map(String::from);
        }
        if info.is_empty() {
            continue;
        }
        let key = (row.job.page_id.clone().unwrap_or_default(), row.job.sender_id.clone());
        let entry = merged
            .entry(key)
            .or_insert_with(|| (row.job.timestamp, row.job.conversation_id.clone(), CustomerInfo::default()));
        entry.2.merge(info);
    }
    if merged.is_empty() {
        return Ok(());
    }
    let (mut page, mut sender, mut conversation) = (Vec::new(), Vec::new(), Vec::new());
    let (mut name, mut phone, mut email, mut address) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((p, s), (_, c, info)) in merged {
        page.push(p);
        sender.push(s);
        conversation.push(c);
        name.push(info.name);
        phone.push(info.phone);
        email.push(info.email);
        address.push(info.address);
    }
    db.execute(
        "INSERT INTO customers AS cu (page_id, sender_id, conversation_id, name, phone, email, address)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
         ON CONFLICT (page_id, sender_id) DO UPDATE SET
             name = COALESCE(EXCLUDED.name, cu.name),
             phone = COALESCE(EXCLUDED.phone, cu.phone),
             email = COALESCE(EXCLUDED.email, cu.email),
             address = COALESCE(EXCLUDED.address, cu.address),
             conversation_id = COALESCE(cu.conversation_id, EXCLUDED.conversation_id),
             updated_at = now()",
        &[&page, &sender, &conversation, &name, &phone, &email, &address],
    )
    .await?;
    Ok(())
}
