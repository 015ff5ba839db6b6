package clusternet

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []netip.Prefix
		wantErr string
	}{
		{name: "default", in: Format(Default()), want: Default()},
		{name: "spaces and duplicates", in: " 10.0.0.0/8 ,fd00::/8,10.0.0.0/8,", want: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}},
		{name: "empty", in: ""},
		{name: "host bits", in: "10.1.2.3/8", wantErr: "did you mean 10.0.0.0/8?"},
		{name: "bare address", in: "10.0.0.1", wantErr: `"10.0.0.1" is not a CIDR`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) error %v, want ErrInvalid containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}
