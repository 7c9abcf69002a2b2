package catalog

import (
	"strings"
	"testing"
)

// The confirmation request says, in each language, why (the provider did
// not sign the letter) and how (reply, nothing else), names the letter and
// the deadline in the campaign's zone; the receipt names the letter and
// the count, in the singular for the first.
func TestSupporterMail(t *testing.T) {
	for _, c := range []struct {
		lang                   string
		confirm, receipt, once []string
	}{
		{"es", []string{"Tu proveedor no firmó esta", "basta con que respondas este correo", "No tienes que hacer nada más",
			"L0000001A", "hasta el 13-05-2024 06:00 (UTC-04:00)", "ana@sin-firma.example", "no respondas"},
			[]string{"ya está contada", "L0000001A", "ya van 120 cartas", "06-05-2024 06:00 (UTC-04:00)"},
			[]string{"Es la primera carta de la campaña."}},
		{"en", []string{"Your provider did not sign this one", "just reply to this message", "There is nothing else to do",
			"L0000001A", "until 13 May 2024 06:00 (UTC-04:00)", "ana@sin-firma.example", "do not reply"},
			[]string{"has been counted", "L0000001A", "120 letters have been counted", "6 May 2024 06:00 (UTC-04:00)"},
			[]string{"It is the campaign's first letter."}},
	} {
		cat, err := New(c.lang, santiago)
		if err != nil {
			t.Fatal(err)
		}
		for key, wants := range map[string][]string{"supporter.confirm.body": c.confirm, "supporter.receipt.body": c.receipt} {
			out, err := cat.Text(key, sampleSupporter)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range wants {
				if !strings.Contains(out, w) {
					t.Errorf("%s %s lacks %q:\n%s", c.lang, key, w, out)
				}
			}
		}
		first := sampleSupporter
		first.Count = 1
		out, _ := cat.Text("supporter.receipt.body", first)
		for _, w := range c.once {
			if !strings.Contains(out, w) {
				t.Errorf("%s receipt of the first letter lacks %q:\n%s", c.lang, w, out)
			}
		}
		for _, key := range []string{"supporter.confirm.subject", "supporter.receipt.subject"} {
			out, _ := cat.Text(key, sampleSupporter)
			if !strings.HasPrefix(out, "[Libertad a los presos políticos] ") || strings.Contains(out, "\n") {
				t.Errorf("%s %s = %q", c.lang, key, out)
			}
		}
	}
}
