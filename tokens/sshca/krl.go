package sshca

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"
)

// An OpenSSH key revocation list (PROTOCOL.krl), the file sshd's
// RevokedKeys and ssh-keygen -Q read. Only what Stepup needs is written:
// certificates revoked by serial, one section per CA. x/crypto/ssh reads
// and writes no KRLs.

const (
	krlMagic         = 0x5353484b524c0a00 // "SSHKRL\n\0"
	krlFormatVersion = 1

	krlSectionCertificates = 1
	krlSectionSerialList   = 0x20
)

// KRL is a revocation list of certificates by serial.
type KRL struct {
	// Version increases each time the list changes (krl_version).
	Version uint64
	// Generated is when the list was made (generated_date, in seconds).
	Generated time.Time
	Comment   string
	// Revoked are the serials to revoke, per CA key that signed them.
	Revoked []RevokedSerials
}

// RevokedSerials are certificates one CA signed that are revoked.
type RevokedSerials struct {
	CA      ssh.PublicKey
	Serials []uint64
}

// Marshal is the KRL in OpenSSH's binary format. Serials are written in
// ascending order, without duplicates and without zero, which OpenSSH
// refuses; a CA with no serials left gets no section.
func (k KRL) Marshal() ([]byte, error) {
	var b bytes.Buffer
	b.Write(be64(krlMagic))
	b.Write(be32(krlFormatVersion))
	b.Write(be64(k.Version))
	b.Write(be64(uint64(max(k.Generated.Unix(), 0))))
	b.Write(be64(0))        // flags: none defined
	b.Write(sshString(nil)) // reserved
	b.Write(sshString([]byte(k.Comment)))
	for _, r := range k.Revoked {
		if r.CA == nil {
			// An empty CA key would revoke these serials of every CA.
			return nil, errors.New("sshca: a KRL section needs its CA key")
		}
		if _, isCert := r.CA.(*ssh.Certificate); isCert {
			return nil, errors.New("sshca: a KRL section's CA is a certificate, not a key")
		}
		serials := slices.Clone(r.Serials)
		slices.Sort(serials)
		serials = slices.Compact(serials)
		serials = slices.DeleteFunc(serials, func(s uint64) bool { return s == 0 })
		if len(serials) == 0 {
			continue
		}
		list := make([]byte, 0, 8*len(serials))
		for _, s := range serials {
			list = binary.BigEndian.AppendUint64(list, s)
		}
		var sec bytes.Buffer
		sec.Write(sshString(r.CA.Marshal()))
		sec.Write(sshString(nil)) // reserved
		sec.WriteByte(krlSectionSerialList)
		sec.Write(sshString(list))
		b.WriteByte(krlSectionCertificates)
		b.Write(sshString(sec.Bytes()))
	}
	return b.Bytes(), nil
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// sshString is RFC 4251's string: a uint32 length, then the bytes.
func sshString(s []byte) []byte {
	return append(binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(s)), uint32(len(s))), s...)
}
