package batch

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

func TestBuildLetterText(t *testing.T) {
	hdr := "From: x@supporter.example\r\nTo: libertad@campaign.example\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
	tests := []struct {
		name  string
		raw   string
		want  []string
		avoid []string
	}{{
		name: "quoted-printable",
		raw:  hdr + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nLibertad a los presos pol=C3=ADticos, =\r\nya.\r\n",
		want: []string{"Libertad a los presos políticos, ya."},
	}, {
		name: "base64",
		raw: hdr + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte("Justicia y verdad: ¡libertad!\r\nMaría")) + "\r\n",
		want: []string{"| Justicia y verdad: ¡libertad!\n| María"},
	}, {
		name: "latin-1 8bit",
		raw:  hdr + "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCanci\xf3n de la libertad, a\xf1o 2019\r\n",
		want: []string{"Canción de la libertad, año 2019"},
	}, {
		name: "windows-1252 quoted-printable",
		raw:  hdr + "Content-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=93Libertad=94 =E9\r\n",
		want: []string{"“Libertad” é"},
	}, {
		name: "no content type",
		raw:  "From: x@y.example\r\nSubject: plain\r\n\r\nJust text.\r\n",
		want: []string{"| Just text.", "Subject: plain\n"},
	}, {
		name: "alternative",
		raw: hdr + "Content-Type: multipart/alternative; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain version\r\n" +
			"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML version</p>\r\n--b1--\r\n",
		want:  []string{"Plain version"},
		avoid: []string{"HTML version"},
	}, {
		name: "text attachment before the text",
		raw: hdr + "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nattached file\r\n" +
			"--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nThe letter=2E\r\n--b2--\r\n--b1--\r\n",
		want:  []string{"The letter."},
		avoid: []string{"attached file"},
	}, {
		name:  "html only",
		raw:   hdr + "Content-Type: text/html; charset=utf-8\r\n\r\n<html><head><title>T</title><style>p{color:red}</style></head><body><p>Libertad&nbsp;para&nbsp;todos &amp; todas</p><p>Ana</p><script>alert(1)</script></body></html>\r\n",
		want:  []string{"(this letter has no plain text part; its HTML is shown with the tags removed)\n| Libertad para todos & todas\n|\n| Ana"},
		avoid: []string{"<p>", "color:red", "alert"},
	}, {
		name: "only an image",
		raw:  hdr + "Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n",
		want: []string{"(no plain text part to show; the letter is attached as it arrived)"},
	}, {
		name: "not MIME at all",
		raw:  "this is not a header line\r\nnor this\r\n\r\nbody\r\n",
		want: []string{"(could not be read: ", "the letter is attached as it arrived)"},
	}, {
		name: "multipart without its boundary",
		raw:  hdr + "Content-Type: multipart/mixed; boundary=nope\r\n\r\n--other\r\n\r\nx\r\n",
		want: []string{"(could not be read: ", "the letter is attached as it arrived)"},
	}, {
		name: "broken base64",
		raw:  hdr + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nSG9sYQ==!!!***\r\n",
		want: []string{"| Hola", "(the rest could not be decoded: "},
	}, {
		name: "unknown charset",
		raw:  hdr + "Content-Type: text/plain; charset=x-no-such\r\n\r\nplain ascii\r\n",
		want: []string{"(its charset is unknown here; shown as received)\n| plain ascii"},
	}, {
		name: "unknown transfer encoding",
		raw:  hdr + "Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644\r\n",
		want: []string{"(its transfer encoding is unknown here; shown as received)\n| begin 644"},
	}, {
		name: "control characters in the text",
		raw:  hdr + "Content-Type: text/plain; charset=utf-8\r\n\r\nred\x1b[31m alert\x07\r\n",
		want: []string{"| red [31m alert"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := []byte(tt.raw)
			s := baseSpec(Letter{ID: "L0000001A", Received: t0, Name: "X", Address: "x@supporter.example", Raw: raw})
			msg, err := Build(s)
			if err != nil {
				t.Fatal(err)
			}
			assertWellFormed(t, msg)
			p := parseBatch(t, msg)
			text := p.summary[strings.Index(p.summary, "Letter 1 of 1"):]
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("summary lacks %q:\n%s", w, text)
				}
			}
			for _, a := range tt.avoid {
				if strings.Contains(text, a) {
					t.Errorf("summary has %q:\n%s", a, text)
				}
			}
			if len(p.digest) != 1 || !bytes.Equal(p.digest[0], raw) {
				t.Errorf("letter not in the digest unchanged")
			}
		})
	}
}

func TestBuildLongText(t *testing.T) {
	body := strings.Repeat("ñ", maxLetterText) // twice the cap in bytes
	s := baseSpec(Letter{ID: "L1", Received: t0, Address: "a@b.example", Raw: plainLetter("a@b.example", "x", body)})
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	p := parseBatch(t, msg)
	if !strings.Contains(p.summary, "ñ\n(cut here; the whole letter is attached)\n") {
		t.Errorf("long letter not cut")
	}
	if strings.Contains(p.summary, "\uFFFD") {
		t.Errorf("cut in the middle of a character")
	}
	if !bytes.Equal(p.digest[0], s.Letters[0].Raw) {
		t.Errorf("digest copy cut")
	}
}
