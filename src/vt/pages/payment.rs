//! The payment form, its outcome with the advice, and saving the card.

use super::*;

/// The payment form, filled with `values` (never the CVV2), with `error`
/// shown beside its field.
fn pay_form_html(ctx: &Ctx<'_>, values: &Fields, error: Option<&InputError>) -> String {
    let value = |name: &str| escape(values.get(name).map(String::as_str).unwrap_or(""));
    let error_for = |name: &str| match error {
        Some(e) if e.field == name => format!(
            "<div class=\"error\" id=\"error_{name}\">Expected {}</div>",
            escape(&e.expected)
        ),
        _ => String::new(),
    };
    let selected = |name: &str, option: &str, default: &str| {
        let current = values.get(name).map(String::as_str).unwrap_or(default);
        if current == option {
            " selected"
        } else {
            ""
        }
    };
    let kinds: String = PaymentKind::ALL
        .iter()
        .filter(|k| **k != PaymentKind::Refund || is_supervisor(ctx.operator))
        .map(|k| {
            format!(
                "<option value=\"{}\"{}>{}</option>",
                k.as_str(),
                selected("type", k.as_str(), "sale"),
                k.label()
            )
        })
        .collect();
    let currencies: String = Currency::all()
        .iter()
        .map(|c| {
            format!(
                "<option value=\"{0}\"{1}>{0}</option>",
                c.alpha,
                selected("currency", c.alpha, "USD")
            )
        })
        .collect();
    let reasons: String = Reason::ALL
        .iter()
        .map(|r| {
            format!(
                "<option value=\"{}\"{}>{}</option>",
                r.as_str(),
                selected("reason", r.as_str(), "telephone-order"),
                r.label()
            )
        })
        .collect();
    let refund_row = if is_supervisor(ctx.operator) {
        format!(
            "<div class=\"wide\"><label for=\"original_rrn\">Original sale's RRN (refunds only)</label>\
             <input id=\"original_rrn\" name=\"original_rrn\" maxlength=\"12\" value=\"{}\">{}</div>",
            value("original_rrn"),
            error_for("original_rrn")
        )
    } else {
        String::new()
    };
    format!(
        "<form method=\"post\" action=\"/pay\" class=\"card\" id=\"payment\" autocomplete=\"off\">\
         {csrf}{key}<div class=\"grid\">\
         <div><label for=\"type\">Type</label><select id=\"type\" name=\"type\">{kinds}</select>{e_type}</div>\
         <div><label for=\"reason\">Reason</label><select id=\"reason\" name=\"reason\">{reasons}</select>{e_reason}</div>\
         <div class=\"wide\"><label for=\"card_number\">Card number</label>\
         <input id=\"card_number\" name=\"card_number\" inputmode=\"numeric\" autocomplete=\"cc-number\" \
         placeholder=\"4111 1111 1111 1111\" value=\"{card}\">\
         <div class=\"hint\" id=\"card_hint\"></div>{e_card}</div>\
         <div><label for=\"expiry\">Expiry (MM/YY)</label>\
         <input id=\"expiry\" name=\"expiry\" placeholder=\"12/28\" autocomplete=\"cc-exp\" value=\"{expiry}\">{e_expiry}</div>\
         <div><label for=\"cvv\">CVV2</label>\
         <input id=\"cvv\" name=\"cvv\" inputmode=\"numeric\" maxlength=\"4\" autocomplete=\"cc-csc\" placeholder=\"3 or 4 digits\">\
         <div class=\"hint\">sent to the card's bank, never stored</div>{e_cvv}</div>\
         <div><label for=\"amount\">Amount</label>\
         <input id=\"amount\" name=\"amount\" inputmode=\"decimal\" placeholder=\"10.50\" value=\"{amount}\">{e_amount}</div>\
         <div><label for=\"currency\">Currency</label><select id=\"currency\" name=\"currency\">{currencies}</select>{e_currency}</div>\
         {refund_row}</div>\
         <div class=\"actions\"><button type=\"submit\" id=\"submit\">Submit payment</button>\
         <span class=\"muted\">Verification and balance inquiries take no amount.</span></div>\
         </form><script>{CARD_SCRIPT}</script>",
        csrf = ctx.csrf_input(),
        key = key_input(),
        e_type = error_for("type"),
        e_reason = error_for("reason"),
        card = value("card_number"),
        e_card = error_for("card_number"),
        expiry = value("expiry"),
        e_expiry = error_for("expiry"),
        e_cvv = error_for("cvv"),
        amount = value("amount"),
        e_amount = error_for("amount"),
        e_currency = error_for("currency"),
    )
}

pub(super) async fn form(State(state): State<Arc<VtState>>, headers: HeaderMap) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let body = format!(
        "<h1>New payment</h1>{}",
        pay_form_html(&ctx, &Fields::new(), None)
    );
    html(
        StatusCode::OK,
        page("New payment", Some(&ctx.header()), "/pay", &body),
    )
}

/// An amount as people type it ("10.50") in minor units of the form's
/// currency; at most the currency's decimals.
pub(super) fn minor_units(text: &str, currency: Option<Currency>) -> Result<String, InputError> {
    let exponent = usize::from(currency.map_or(2, |c| c.exponent));
    let text = text.trim();
    let expected = || InputError {
        field: "amount",
        expected: format!(
            "an amount such as {} (digits, at most {exponent} decimals)",
            if exponent == 0 { "1050" } else { "10.50" }
        ),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > exponent {
        return Err(expected());
    }
    let minor = format!("{whole}{fraction:0<exponent$}");
    Ok(minor.trim_start_matches('0').to_owned()).map(|m| if m.is_empty() { "0".into() } else { m })
}

pub(super) async fn submit(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let mut fields = form.clone();
    let currency = form.get("currency").and_then(|c| Currency::parse(c));
    let checked = match form.get("amount").filter(|a| !a.trim().is_empty()) {
        Some(amount) => minor_units(amount, currency).map(|minor| {
            fields.insert("amount".into(), minor);
        }),
        None => Ok(()),
    }
    .and_then(|()| PaymentRequest::from_fields(&fields));
    let request = match checked {
        Ok(request) => request,
        Err(error) => {
            let body = format!(
                "<h1>New payment</h1><div class=\"outcome bad\" id=\"input_error\"><h2>Please check the form</h2><p>{}</p></div>{}",
                escape(&error.to_string()),
                pay_form_html(&ctx, &form, Some(&error))
            );
            return html(
                StatusCode::BAD_REQUEST,
                page("New payment", Some(&ctx.header()), "/pay", &body),
            );
        }
    };
    let result = state
        .engine
        .pay(ctx.operator, &request, form_key(&form))
        .await;
    let outcome = match result {
        Ok(result) => {
            let mut html = result_html(&result, Some(brand_of(request.card.digits())));
            let savable = matches!(
                request.kind,
                PaymentKind::Sale | PaymentKind::PreAuthorization | PaymentKind::Verification
            );
            if let Some(id) = result.id.filter(|_| savable && result.status == "approved") {
                html.push_str(&save_card_form(&ctx, id));
            }
            html
        }
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Payment not made", &message);
        }
    };
    let body = format!(
        "<h1>New payment</h1>{outcome}{}",
        pay_form_html(&ctx, &Fields::new(), None)
    );
    html(
        StatusCode::OK,
        page("New payment", Some(&ctx.header()), "/pay", &body),
    )
}

/// The outcome of a payment, cancel or refund.
pub(super) fn result_html(result: &PaymentResult, brand: Option<&str>) -> String {
    let approved = matches!(result.status.as_str(), "approved" | "cancelled");
    let heading = match result.status.as_str() {
        "approved" => "Approved".to_owned(),
        "cancelled" => "Cancelled".to_owned(),
        _ => format!("Declined ({})", result.response_code),
    };
    let mut facts = vec![("Type", result.kind.clone())];
    if let Some(card) = &result.card {
        let card = match brand.filter(|b| *b != "card") {
            Some(brand) => format!("{card} ({brand})"),
            None => card.clone(),
        };
        facts.push(("Card", card));
    }
    if let Some(amount) = &result.amount {
        facts.push(("Amount", amount.clone()));
    }
    facts.push((
        "Response code",
        format!("{} — {}", result.response_code, result.message),
    ));
    if let Some(auth) = &result.auth_code {
        facts.push(("Auth code", auth.clone()));
    }
    if let Some(rrn) = &result.rrn {
        facts.push(("RRN", rrn.clone()));
    }
    let mut html = outcome_box(approved, &heading, &facts, Some(&result.advice));
    if let Some(id) = result.id.filter(|_| result.status == "approved") {
        html.push_str(&format!(
            "<p class=\"noprint\"><a class=\"button secondary small\" href=\"/receipt/{id}\" id=\"receipt_link\">Receipt</a></p>"
        ));
    }
    html
}

/// Offers to keep the card of approved payment `id` on file.
pub(super) fn save_card_form(ctx: &Ctx<'_>, id: i64) -> String {
    format!(
        "<form method=\"post\" action=\"/cards\" class=\"card noprint\" id=\"save_card\">{}\
         <input type=\"hidden\" name=\"payment_id\" value=\"{id}\">\
         <h2>Keep this card for recurring charges?</h2>\
         <p><label style=\"font-weight:400\"><input type=\"checkbox\" name=\"consent\" id=\"consent\" required style=\"width:auto\"> \
         The customer agrees that the card is kept on file and charged on a schedule.</label></p>\
         <div class=\"actions\"><button type=\"submit\" class=\"secondary\" id=\"save_card_button\">Save card</button></div></form>",
        ctx.csrf_input()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_amounts_become_minor_units_of_the_currency() {
        let usd = Currency::parse("USD");
        let jpy = Currency::parse("JPY");
        assert_eq!(minor_units("10.50", usd).as_deref(), Ok("1050"));
        assert_eq!(minor_units("10.5", usd).as_deref(), Ok("1050"));
        assert_eq!(minor_units("7", usd).as_deref(), Ok("700"));
        assert_eq!(minor_units("0", usd).as_deref(), Ok("0"));
        assert_eq!(minor_units("500", jpy).as_deref(), Ok("500"));
        for bad in ["10.505", "1,00", "-1", "", ".5", "1e3"] {
            assert_eq!(
                minor_units(bad, usd).map_err(|e| e.field),
                Err("amount"),
                "{bad}"
            );
        }
        assert!(minor_units("10.5", jpy).is_err());
    }
}
