import sys,subprocess,re
def prof(f,incl):
    out=subprocess.run(['callgrind_annotate','--threshold=100','--inclusive='+('yes' if incl else 'no'),f],capture_output=True,text=True).stdout
    d={}
    for l in out.splitlines():
        m=re.match(r'\s*([\d,]+) \([^)]*\)\s+\*?\s*(\S+:\S+)',l)
        if m:
            fn=m.group(2); v=int(m.group(1).replace(',',''))
            d[fn]=d.get(fn,0)+v
    return d
a,b,n=sys.argv[1],sys.argv[2],float(sys.argv[3]); incl=len(sys.argv)>4 and sys.argv[4]=='incl'
A,B=prof(a,incl),prof(b,incl)
rows=sorted(set(A)|set(B),key=lambda k:-(B.get(k,0)-A.get(k,0)))
for k in rows[:int(sys.argv[5]) if len(sys.argv)>5 else 40]:
    dv=(B.get(k,0)-A.get(k,0))/n
    print('%9.0f  %9.0f %9.0f  %s'%(dv,A.get(k,0)/n,B.get(k,0)/n,k.replace('/usr/bin/redis-check-rdb','')[:90]))
