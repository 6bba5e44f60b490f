package seal_test

import (
	"bytes"
	"testing"

	"github.com/brokerauth/broker/internal/seal"
)

// fuzzKeys are fixed so that the checked-in corpus in
// testdata/fuzz/FuzzOpen holds values that really open (sealed under
// fuzzKeys[0] and fuzzKeys[1] with additional data "broker_flow").
var fuzzKeys = [][]byte{
	bytes.Repeat([]byte{0x01}, seal.KeySize),
	bytes.Repeat([]byte{0x02}, seal.KeySize),
}

// FuzzOpen checks that Open and OpenString never panic on arbitrary input,
// and that whatever opens round-trips through Seal.
func FuzzOpen(f *testing.F) {
	k, err := seal.NewKeyring(fuzzKeys...)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(k.Seal([]byte("hello"), []byte("broker_flow")), []byte("broker_flow"))
	f.Add(k.Seal(nil, nil), []byte{})
	f.Add([]byte{}, []byte{})
	f.Add(make([]byte, seal.Overhead), []byte("x"))
	f.Fuzz(func(t *testing.T, sealed, ad []byte) {
		plaintext, err := k.Open(sealed, ad)
		_ = k.NeedsReseal(sealed)
		_, _ = k.OpenString(string(sealed), string(ad))
		_ = k.NeedsResealString(string(sealed))
		if err != nil {
			return
		}
		if len(plaintext) != len(sealed)-seal.Overhead {
			t.Fatalf("opened %d bytes from %d sealed; want %d", len(plaintext), len(sealed), len(sealed)-seal.Overhead)
		}
		again, err := k.Open(k.Seal(plaintext, ad), ad)
		if err != nil || !bytes.Equal(again, plaintext) {
			t.Fatalf("reseal round trip = %q, %v; want %q, nil", again, err, plaintext)
		}
	})
}
