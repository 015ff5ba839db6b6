package ports

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "empty", in: "", want: ""},
		{name: "single", in: "25", want: "25"},
		{name: "list sorted", in: "3306, 25,587", want: "25,587,3306"},
		{name: "range merges neighbours", in: "10-20,21,5-9", want: "5-21"},
		{name: "overlap", in: "10-20,15-30", want: "10-30"},
		{name: "blank entries", in: ",25,,", want: "25"},
		{name: "zero", in: "0", wantErr: true},
		{name: "too big", in: "65536", wantErr: true},
		{name: "reversed range", in: "20-10", wantErr: true},
		{name: "word", in: "http", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Parse(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if err == nil && got.String() != tc.want {
				t.Errorf("Parse(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestContains(t *testing.T) {
	s := MustParse("25,100-200,65535")
	for p, want := range map[uint16]bool{1: false, 25: true, 26: false, 99: false, 100: true, 150: true, 200: true, 201: false, 65535: true} {
		if got := s.Contains(p); got != want {
			t.Errorf("Contains(%d) = %v, want %v", p, got, want)
		}
	}
	if (Set{}).Contains(25) {
		t.Error("zero Set contains 25")
	}
}

func FuzzParse(f *testing.F) {
	// Seeds: the syntaxes users write in annotations, and near misses.
	for _, s := range []string{"25,587", "4000-4010", " 1 , 2 ", "0", "-", "1-", "65535-1", "a,b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := Parse(s)
		if err != nil {
			return
		}
		// What String prints must parse back to the same set.
		again, err := Parse(set.String())
		if err != nil || again.String() != set.String() {
			t.Fatalf("round trip of %q: %q, %v", s, again, err)
		}
	})
}
