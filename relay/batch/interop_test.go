package batch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// spanishBatch is a batch of a Spanish campaign in Santiago with a letter of
// each kind the digest carries: plain, raw UTF-8 header, a line too long
// for 8bit.
func spanishBatch(t *testing.T) (Spec, []byte) {
	t.Helper()
	letters := lettersOfEveryVerdict()
	letters[1].Raw = crlfLines(
		"From: Pedro Soto <pedro@dominio.cl>",
		"Subject: Carta de Pedro, con ñ",
		"Message-ID: <pedro@dominio.cl>",
		"",
		"Libertad.",
	)
	letters[2].Raw = plainLetter("rosa@correo.cl", "x", strings.Repeat("libertad ", 150))
	s := baseSpec(letters...)
	s.Language, s.Location = "es", santiago
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, msg
}

// The batch as Go's standard library reads it: net/mail for the message,
// mime/multipart for the parts (which undoes quoted-printable itself).
func TestBatchReadByStandardLibrary(t *testing.T) {
	s, msg := spanishBatch(t)
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil || subject != "[Libertad a los presos políticos] lote 7: 5 cartas" {
		t.Errorf("Subject %q, %v", subject, err)
	}
	if d, err := m.Header.Date(); err != nil || !d.Equal(s.Date) {
		t.Errorf("Date %v, %v", d, err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q, %v", mt, err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pt, pp, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		types = append(types, pt)
		switch pt {
		case "text/plain":
			body, _ := io.ReadAll(part)
			if !strings.Contains(string(body), "Lote 7: 5 cartas\r\n") || !strings.Contains(string(body), "SIN VERIFICAR") {
				t.Errorf("summary:\n%s", body)
			}
		case "text/csv":
			if part.FileName() != "lote-7.csv" {
				t.Errorf("CSV file name %q", part.FileName())
			}
			body, _ := io.ReadAll(part)
			rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, []byte(utf8BOM)))).ReadAll()
			if err != nil || len(rows) != 6 || rows[1][1] != "María José Núñez" || rows[1][0] != "2024-01-15T00:00:00-03:00" {
				t.Errorf("CSV %q, %v", rows, err)
			}
		case "multipart/digest":
			dr := multipart.NewReader(part, pp["boundary"])
			for i := 0; ; i++ {
				lp, err := dr.NextPart()
				if err == io.EOF {
					if i != len(s.Letters) {
						t.Errorf("%d letters in the digest", i)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				var r io.Reader = lp
				if lp.Header.Get("Content-Transfer-Encoding") == "base64" {
					r = base64.NewDecoder(base64.StdEncoding, lp)
				}
				raw, err := io.ReadAll(r)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(raw, s.Letters[i].Raw) {
					t.Errorf("letter %d differs", i+1)
				}
				if _, err := mail.ReadMessage(bytes.NewReader(raw)); err != nil {
					t.Errorf("letter %d does not parse: %v", i+1, err)
				}
			}
		}
	}
	if strings.Join(types, " ") != "text/plain text/csv multipart/digest" {
		t.Errorf("parts %q", types)
	}
}

// readByPython is a Python script that reads a batch with the email
// package, and its CSV with the csv module, and prints what it found.
const readByPython = `
import csv, email, email.policy, io, json, sys
with open(sys.argv[1], "rb") as f:
    m = email.message_from_binary_file(f, policy=email.policy.default)
out = {"subject": str(m["subject"]), "defects": [str(d) for d in m.defects]}
for part in m.walk():
    ct = part.get_content_type()
    if ct == "text/plain" and "summary" not in out:
        out["summary"] = part.get_content()
    elif ct == "text/csv":
        out["csv_name"] = part.get_filename()
        raw = part.get_payload(decode=True)
        out["csv_bom"] = raw.startswith(b"\xef\xbb\xbf")
        out["csv"] = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    elif ct == "multipart/digest":
        out["digest"] = [p.get_content_type() + " " + str(p["content-transfer-encoding"]) for p in part.iter_parts()]
        out["froms"] = [str(p.get_payload()[0]["from"]) for p in part.iter_parts() if p["content-transfer-encoding"] != "base64"]
json.dump(out, sys.stdout)
`

// The Spanish batch as Python's email package reads it: the subject, the
// summary in UTF-8, the CSV through the csv module, the digest's labels.
func TestBatchReadByPython(t *testing.T) {
	python := needTool(t, "python3", "python3")
	_, msg := spanishBatch(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "lote-7.eml")
	if err := os.WriteFile(path, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", readByPython, path).Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var got struct {
		Subject, Summary       string
		CSVName                string `json:"csv_name"`
		Defects, Digest, Froms []string
		CSVBOM                 bool `json:"csv_bom"`
		CSV                    [][]string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Subject != "[Libertad a los presos políticos] lote 7: 5 cartas" {
		t.Errorf("subject %q", got.Subject)
	}
	if len(got.Defects) > 0 {
		t.Errorf("Python found defects: %q", got.Defects)
	}
	for _, want := range []string{
		"Con este lote ya van 120 cartas en total.",
		"1. María José Núñez <mjose@gmail.com>\n   15-01-2024 00:00 (UTC-03:00) · L0000001A\n   firma DKIM de gmail.com\n",
		"SIN VERIFICAR (nada prueba que esta dirección la haya enviado)",
		"Asunto: Carta de Pedro, con ñ\n\n| Libertad.\n",
	} {
		if !strings.Contains(got.Summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, got.Summary)
		}
	}
	if !got.CSVBOM || got.CSVName != "lote-7.csv" {
		t.Errorf("CSV BOM %v, name %q", got.CSVBOM, got.CSVName)
	}
	if len(got.CSV) != 6 || strings.Join(got.CSV[0], ",") != strings.Join(CSVHeader, ",") ||
		got.CSV[1][1] != "María José Núñez" || got.CSV[1][3] != "gmail.com" || got.CSV[2][3] != "" || got.CSV[2][5] != "spf" {
		t.Errorf("CSV %q", got.CSV)
	}
	// Letter 2 has "ñ" in its Subject, letter 3 a line of 1350 octets.
	wantDigest := []string{"message/rfc822 8bit", "message/global 8bit", "message/global base64", "message/rfc822 8bit", "message/rfc822 8bit"}
	if strings.Join(got.Digest, ",") != strings.Join(wantDigest, ",") {
		t.Errorf("digest %q, want %q", got.Digest, wantDigest)
	}
	if len(got.Froms) != 4 || got.Froms[0] != "mjose@gmail.com" || got.Froms[1] != "Pedro Soto <pedro@dominio.cl>" {
		t.Errorf("letters' From %q", got.Froms)
	}
}
