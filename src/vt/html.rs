//! The pages' frame: escaping, the layout every page shares, the style
//! sheet and the little script of the payment form (Luhn as you type, card
//! brand). Plain `format!` with one escaping function: the pages are few and
//! small, so a template engine would add a build-time macro crate and its
//! compile cost for nothing a reader needs; everything interpolated goes
//! through [`escape`].

use super::engine::AdviceView;

/// `text` with the five HTML specials escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who is logged in, for the header.
pub struct Header<'a> {
    pub username: &'a str,
    pub role: &'a str,
    pub terminal: &'a str,
    pub merchant: &'a str,
    pub csrf: &'a str,
    pub supervisor: bool,
}

/// A whole page: `body` is already HTML.
pub fn page(title: &str, header: Option<&Header<'_>>, active: &str, body: &str) -> String {
    let nav = match header {
        Some(h) => {
            let link = |href: &str, label: &str| {
                let class = if href == active {
                    " class=\"active\""
                } else {
                    ""
                };
                format!("<a href=\"{href}\"{class}>{label}</a>")
            };
            let shift = if h.supervisor {
                link("/shift", "Shift close")
            } else {
                String::new()
            };
            format!(
                "<nav>{}{}{}{}</nav>\
                 <div class=\"who\"><span title=\"Terminal {} · Merchant {}\">{} <small>({})</small></span>\
                 <span class=\"ids\">Terminal {} · Merchant {}</span>\
                 <form method=\"post\" action=\"/logout\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\" class=\"link\">Log out</button></form></div>",
                link("/pay", "New payment"),
                link("/operations", "Today's operations"),
                link("/schedules", "Recurring"),
                shift,
                escape(h.terminal),
                escape(h.merchant),
                escape(h.username),
                escape(h.role),
                escape(h.terminal),
                escape(h.merchant),
                escape(h.csrf),
            )
        }
        None => String::new(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Virtual terminal</title><style>{STYLE}</style></head>\
         <body><header><div class=\"brand\"><span class=\"logo\">◆</span> isoswitch \
         <b>Virtual terminal</b></div>{nav}</header><main>{body}</main>\
         <footer>Card data is sent to the card's bank and never stored in clear; \
         card numbers are shown masked.</footer></body></html>",
        escape(title)
    )
}

/// An outcome box: approved (with auth code) or declined (with the advice).
pub fn outcome_box(
    approved: bool,
    heading: &str,
    facts: &[(&str, String)],
    advice: Option<&AdviceView>,
) -> String {
    let class = if approved { "ok" } else { "bad" };
    let mut html = format!(
        "<section class=\"outcome {class}\" id=\"outcome\"><h2>{}</h2><dl>",
        escape(heading)
    );
    for (label, value) in facts {
        html.push_str(&format!(
            "<dt>{}</dt><dd data-field=\"{}\">{}</dd>",
            escape(label),
            escape(&label.to_ascii_lowercase().replace(' ', "-")),
            escape(value)
        ));
    }
    html.push_str("</dl>");
    if let Some(advice) = advice.filter(|_| !approved) {
        let retry = match advice.retry.as_str() {
            "never" => "Do not try again with this card.",
            "later" => "Trying again later may work.",
            "after-correction" => "Try again once the problem is put right.",
            _ => "",
        };
        html.push_str(&format!(
            "<div class=\"advice\"><p><b>Why:</b> <span id=\"reason\">{}</span></p>\
             <p><b>Tell the customer:</b> <span id=\"tell\">{}</span></p>\
             <p><b>Retry:</b> <span id=\"retry\">{}</span></p></div>",
            escape(&advice.reason),
            escape(&advice.tell_customer),
            escape(retry)
        ));
    }
    html.push_str("</section>");
    html
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2733;background:#f3f5f8}
header{background:#14324f;color:#fff;padding:0 20px;display:flex;align-items:center;gap:18px;min-height:56px;flex-wrap:wrap}
.brand{font-size:17px;white-space:nowrap}.brand b{font-weight:600}.logo{color:#5fb3ff}
nav{display:flex;gap:4px;flex:1}
nav a{color:#cfe0f2;text-decoration:none;padding:17px 10px;border-bottom:3px solid transparent;white-space:nowrap}
nav a.active,nav a:hover{color:#fff;border-bottom-color:#5fb3ff}
.who{display:flex;gap:14px;align-items:center;font-size:13px;color:#cfe0f2;white-space:nowrap}
.who .ids{color:#9fb7cf}
main{max-width:1120px;margin:28px auto;padding:0 20px}
h1{font-size:22px;margin:0 0 18px;font-weight:600}
h2{font-size:18px;margin:0 0 12px}
.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:22px 24px;margin-bottom:20px;box-shadow:0 1px 2px rgba(20,50,79,.05)}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:14px 20px}
.grid .wide{grid-column:1/-1}
label{display:block;font-size:13px;font-weight:600;color:#3b4a5a;margin-bottom:4px}
input,select{width:100%;padding:9px 11px;font-size:15px;border:1px solid #c3ccd6;border-radius:6px;background:#fff}
input:focus,select:focus{outline:2px solid #5fb3ff;border-color:#5fb3ff}
input.invalid{border-color:#c62828;background:#fff6f6}
.hint{font-size:12px;color:#637488;margin-top:3px;min-height:16px}
.hint.bad{color:#c62828}.hint.good{color:#2e7d32}
.error{color:#c62828;font-size:13px;margin-top:3px}
button,.button{display:inline-block;background:#1f6fd1;color:#fff;border:0;border-radius:6px;padding:10px 20px;font-size:15px;font-weight:600;cursor:pointer;text-decoration:none}
button:hover,.button:hover{background:#175bb0}
button.secondary,.button.secondary{background:#e7edf4;color:#14324f}
button.danger{background:#b3261e}
button.small,.button.small{padding:5px 10px;font-size:13px}
button.link{background:none;color:#cfe0f2;padding:0;font-weight:400;font-size:13px;text-decoration:underline}
form.inline{display:inline}
.actions{margin-top:18px;display:flex;gap:10px;align-items:center}
.outcome{border-radius:8px;padding:18px 22px;margin-bottom:20px;border:1px solid}
.outcome.ok{background:#edf7ee;border-color:#9ccc9f}
.outcome.bad{background:#fdeeee;border-color:#e4a5a1}
.outcome h2{margin:0 0 10px}
.outcome.ok h2{color:#1b5e20}.outcome.bad h2{color:#8e1c16}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dt{color:#516273}dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums}
.advice{margin-top:12px;padding-top:10px;border-top:1px solid #e4a5a1}
.advice p{margin:4px 0}
table{width:100%;border-collapse:collapse;background:#fff;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:9px 10px;border-bottom:1px solid #e3e8ee;font-size:14px;vertical-align:middle}
th{background:#f7f9fb;color:#516273;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num,th.num{text-align:right}
td.num,td.actions-cell{white-space:nowrap}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600}
.badge.approved{background:#e3f2e4;color:#1b5e20}.badge.declined{background:#fbe3e2;color:#8e1c16}
.badge.cancelled,.badge.reversed{background:#eceff3;color:#4b5b6b}.badge.pending{background:#fff4d6;color:#7a5a00}
.muted{color:#637488}
.filters{display:flex;gap:10px;align-items:end;margin-bottom:14px}
.filters input{width:auto}
.receipts{display:grid;grid-template-columns:1fr 1fr;gap:20px}
.receipt{background:#fff;border:1px dashed #9aa8b6;padding:18px;font:13px/1.5 ui-monospace,Menlo,Consolas,monospace}
.receipt h3{text-align:center;margin:0 0 8px;font-size:14px}
.receipt .row{display:flex;justify-content:space-between}
.receipt .big{font-size:16px;font-weight:700}
footer{max-width:1120px;margin:0 auto 30px;padding:0 20px;color:#7a8a9b;font-size:12px}
.login{max-width:380px;margin:60px auto}
@media print{header,footer,nav,.actions,.noprint{display:none}body{background:#fff}main{margin:0}}
@media (max-width:1340px){.who .ids{display:none}}
@media (max-width:700px){.grid,.receipts{grid-template-columns:1fr}}
"#;

/// Luhn check and brand as the card number is typed; the server checks again.
pub const CARD_SCRIPT: &str = r#"
(function(){
  var input=document.getElementById('card_number'),hint=document.getElementById('card_hint');
  if(!input||!hint)return;
  function brand(d){
    if(/^62/.test(d))return 'UnionPay (not accepted here)';
    if(/^(50|5[6-8]|67)/.test(d))return 'Maestro (not accepted here)';
    if(/^4/.test(d))return 'Visa';
    if(/^(5[1-5]|2[2-7])/.test(d))return 'Mastercard';
    if(/^3[47]/.test(d))return 'American Express';
    if(/^(6011|65)/.test(d))return 'Discover';
    if(/^35/.test(d))return 'JCB';
    return '';
  }
  function luhn(d){
    var s=0;
    for(var i=0;i<d.length;i++){
      var n=+d[d.length-1-i];
      if(i%2){n*=2;if(n>9)n-=9;}
      s+=n;
    }
    return s%10===0;
  }
  function check(){
    var d=input.value.replace(/[\s-]/g,'');
    var b=brand(d);
    if(!d){hint.textContent='';hint.className='hint';input.classList.remove('invalid');return;}
    if(!/^\d+$/.test(d)){hint.textContent='digits only';hint.className='hint bad';input.classList.add('invalid');return;}
    if(d.length<12){hint.textContent=(b?b+' · ':'')+d.length+' digits';hint.className='hint';input.classList.remove('invalid');return;}
    var ok=d.length<=19&&luhn(d);
    hint.textContent=(b?b+' · ':'')+(ok?'number looks right':'check the number: it does not add up');
    hint.className='hint '+(ok?'good':'bad');
    input.classList.toggle('invalid',!ok);
  }
  input.addEventListener('input',check);check();
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let html = page("<t>", None, "/", "");
        assert!(html.contains("&lt;t&gt;") && !html.contains("<t>"));
    }
}
